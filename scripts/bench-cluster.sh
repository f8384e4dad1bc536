#!/usr/bin/env bash
# What going through Redis costs a live room: the same load on one ws-stream instance alone, one
# instance on the bus, and three instances on the bus, all on one PostgreSQL database, on this
# machine's cores; and what Redis itself spends per published message.
#
#   scripts/bench-cluster.sh                 # 1,000 viewers x 100 comments/s, 20 s per run
#   VIEWERS=200 RATE=50 DURATION=10 scripts/bench-cluster.sh
#
# Needs: a release build of danmaku and ws-stream (cargo build --release --locked -p danmaku-cli
# -p ws-stream), PostgreSQL answering at DANMAKU_BENCH_POSTGRES (a server URL without a database,
# default postgres://postgres@127.0.0.1:5432) with psql, and redis-server and redis-cli: the
# script starts a Redis of its own on a free port, so its CPU is this run's alone.
#
# Writes the raw reports to cli/benchmarks/cluster-*.json and a summary (Markdown rows) to
# stdout: per run, deliveries/s, p50/p99, server CPU per delivery (summed over the instances),
# and for the bus runs what Redis did: PUBLISH calls (fan-out) and EVALSHA calls (the shared write
# budget, one per comment), the time per PUBLISH Redis itself measures (INFO commandstats), and
# its process's CPU time over the run, per comment sent.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/target/release"
OUT="$ROOT/cli/benchmarks"
VIEWERS="${VIEWERS:-1000}"
RATE="${RATE:-100}"
DURATION="${DURATION:-20}"
RAMP="${RAMP:-5}"
SERVER="${DANMAKU_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
export PGOPTIONS="--client-min-messages=warning"
DB="danmaku_bench_cluster"

for exe in danmaku ws-stream; do
  [[ -x "$BIN/$exe" ]] || { echo "build first: cargo build --release --locked -p danmaku-cli -p ws-stream" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$SERVER/postgres" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# CPU seconds (user + system) a process has used so far.
cpu_secs() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
BUS="redis://127.0.0.1:$REDIS_PORT/"

FLAGS=(--rate-per-sec 1000000 --rate-burst 1000000 --read-rows-per-sec 1000000
  --read-rows-burst 1000000 --max-connections-per-client 1000000)

# run NAME INSTANCES BUS?: starts the instances on a fresh database, benches them, stops them.
run() {
  local name="$1" count="$2" with_bus="$3"
  psql "$SERVER/postgres" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null
  psql "$SERVER/postgres" -qc "CREATE DATABASE $DB" >/dev/null
  local urls=() pids=() started=()
  for _ in $(seq "$count"); do
    local port
    port="$(free_port)"
    local args=(--bind 127.0.0.1 --port "$port" --store "$SERVER/$DB" "${FLAGS[@]}")
    if [[ "$with_bus" == yes ]]; then args+=(--bus "$BUS" --bus-channel "bench.$name"); fi
    RUST_LOG=warn "$BIN/ws-stream" "${args[@]}" &
    started+=($!)
    PIDS+=($!)
    urls+=("ws://127.0.0.1:$port")
    pids+=($!)
  done
  for url in "${urls[@]}"; do
    local base="http://${url#ws://}"
    for _ in $(seq 100); do
      if curl -sf "$base/healthz" | grep -q '"status":"ok"'; then break; fi
      sleep 0.1
    done
  done
  redis-cli -p "$REDIS_PORT" CONFIG RESETSTAT >/dev/null
  local redis_before
  redis_before="$(cpu_secs "$REDIS_PID")"
  local url_list pid_list
  url_list="$(IFS=,; echo "${urls[*]}")"
  pid_list="$(IFS=,; echo "${pids[*]}")"
  "$BIN/danmaku" bench --url "$url_list" --server-pid "$pid_list" --viewers "$VIEWERS" \
    --rate "$RATE" --duration "$DURATION" --ramp "$RAMP" --json >"$OUT/cluster-$name.json" || true
  local redis_after stats
  redis_after="$(cpu_secs "$REDIS_PID")"
  stats="$(redis-cli -p "$REDIS_PORT" INFO commandstats | tr -d '\r')"
  python3 - "$OUT/cluster-$name.json" "$name" "$count" "$redis_before" "$redis_after" "$stats" <<'PY'
import json, re, sys
path, name, count, before, after, stats = sys.argv[1:]
calls = {m[0]: (int(m[1]), float(m[2])) for m in re.findall(r"cmdstat_(\w+):calls=(\d+),usec=\d+,usec_per_call=([\d.]+)", stats)}
publishes, publish_usec = calls.get("publish", (0, 0.0))
evals = calls.get("evalsha", (0, 0.0))[0] + calls.get("eval", (0, 0.0))[0]
r = json.load(open(path))
lat = r["latency"]
server = r.get("server") or {}
deliveries = r["received"]
per_delivery = server.get("cpu_micros_per_delivery") or 0.0
redis_cpu = float(after) - float(before)
redis_per_comment = redis_cpu / r["acked"] * 1e6 if r["acked"] and publishes else 0
print(f"| {name} | {count} | {r['received']:,} / {r['expected_deliveries']:,} | {r['lost']} | {r['duplicated']} "
      f"| {r.get('deliveries_per_sec', 0):,.0f} | {lat['p50_ms']:.1f} | {lat['p99_ms']:.1f} "
      f"| {per_delivery:.2f} | {publishes:,} / {evals:,} | {publish_usec:.1f} | {redis_cpu:.2f} | {redis_per_comment:.0f} "
      f"| {r['cpu']['other_cores_busy']:.2f} |")
PY
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}

echo "| run | instances | received / expected | lost | dup | deliveries/s | p50 ms | p99 ms | server µs CPU / delivery | Redis PUBLISH / EVALSHA calls | µs per PUBLISH (Redis INFO) | Redis CPU s | Redis µs CPU / comment | other cores |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
run alone 1 no
run one-on-bus 1 yes
run three-on-bus 3 yes
