#!/usr/bin/env bash
# Memory per idle WebSocket connection (issue 13): 10,000 viewers connect to one live room of a
# ws-stream this script starts, then sit idle (no senders: nothing is sent); the server's RSS
# before and after they connected, divided by the connections, is the figure.
#
#   scripts/bench-idle.sh                      # 10,000 idle viewers, prints per-connection memory
#   VIEWERS=2000 scripts/bench-idle.sh         # fewer
#   OUT=cli/benchmarks/idle-10000-after.json scripts/bench-idle.sh   # keep the raw report
#   HEAPTRACK=1 scripts/bench-idle.sh          # the server under heaptrack: where the bytes go
#   SERVER_ENV="MALLOC_ARENA_MAX=1" scripts/bench-idle.sh   # an environment for the server
#
# Builds the release binaries first (cargo build --release --locked), raises the open-file soft
# limit to the hard one (one descriptor per connection on each side) and fails if that is not
# enough. Without HEAPTRACK, `danmaku bench` starts the server itself; with it, the script starts
# ws-stream under heaptrack with the flags the bench would use, points the bench at it, stops it
# once the viewers are connected (SIGTERM, so heaptrack writes its file) and prints the top
# allocation sites still live at the peak (`heaptrack_print`), and where the file is.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/target/release"
VIEWERS="${VIEWERS:-10000}"
RAMP="${RAMP:-20}"
DURATION="${DURATION:-5}"
OUT="${OUT:-}"
HEAPTRACK="${HEAPTRACK:-}"
SERVER_ENV="${SERVER_ENV:-}"

cargo build --release --locked -p ws-stream -p danmaku-cli

need=$((VIEWERS + 200))
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [[ "$(ulimit -n)" != unlimited && "$(ulimit -n)" -lt "$need" ]]; then
  echo "the open-file limit is $(ulimit -n); $need are needed (raise the hard limit)" >&2
  exit 1
fi

BENCH=(--viewers "$VIEWERS" --senders 0 --duration "$DURATION" --ramp "$RAMP" --json)
REPORT="$(mktemp)"
TMP="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap 'cleanup; rm -f "$REPORT"' EXIT

if [[ -z "$HEAPTRACK" ]]; then
  # shellcheck disable=SC2086 # SERVER_ENV is a list of NAME=value words.
  env $SERVER_ENV "$BIN/danmaku" bench "${BENCH[@]}" >"$REPORT" || true
else
  command -v heaptrack >/dev/null || { echo "heaptrack is not installed" >&2; exit 1; }
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  PORT="$(free_port)"
  # The flags `danmaku bench` gives a server it starts (cli/src/servers.rs).
  # shellcheck disable=SC2086
  env $SERVER_ENV RUST_LOG=warn heaptrack -o "$TMP/ws-stream" "$BIN/ws-stream" \
    --bind 127.0.0.1 --port "$PORT" --store "$TMP/ws-stream.db" \
    --rate-per-sec 1000000 --rate-burst 1000000 \
    --read-rows-per-sec 1000000 --read-rows-burst 1000000 \
    --max-connections-per-client 1000000 >"$TMP/heaptrack.log" 2>&1 &
  HT_PID=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  SERVER_PID="$(pgrep -P "$HT_PID" -n || true)"
  [[ -n "$SERVER_PID" ]] || SERVER_PID="$(pgrep -f "$BIN/ws-stream --bind 127.0.0.1 --port $PORT" -n)"
  "$BIN/danmaku" bench "${BENCH[@]}" --url "ws://127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
    >"$REPORT" || true
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$HT_PID" 2>/dev/null || true
  SERVER_PID=""
  DATA="$(ls "$TMP"/ws-stream*.zst 2>/dev/null | head -1)"
  KEEP="$ROOT/target/heaptrack-idle-$VIEWERS.zst"
  cp "$DATA" "$KEEP"
  echo "heaptrack data: $KEEP (heaptrack_print $KEEP | less)"
  heaptrack_print --print-peaks 1 --print-allocators 0 --print-temporary 0 --print-leaks 0 \
    --peak-limit 25 --sub-peak-limit 0 "$KEEP" | sed -n '/MOST MEMORY CONSUMED/,/^$/p;/^total runtime/,$p'
fi

[[ -n "$OUT" ]] && cp "$REPORT" "$OUT"
python3 - "$REPORT" "$VIEWERS" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
server = report.get("server") or {}
before, after = server.get("rss_before_kib"), server.get("rss_connected_kib")
per = server.get("rss_per_connection_kib")
print(f"viewers connected: {report['viewers_connected']} of {sys.argv[2]} (no senders: an idle room)")
print(f"server RSS: {before} KiB before, {after} KiB connected, peak {server.get('peak_rss_kib')} KiB")
print(f"per connection: {per:.2f} KiB" if per is not None else "per connection: (not measured)")
EOF
