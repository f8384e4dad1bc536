#!/usr/bin/env bash
# ws-stream side by side with its peers, Bun's WebSocket pub/sub and Node's `ws` (issue 13): the
# same points, one run, the table written into BENCHMARKS.md between its versus markers.
#
#   bash scripts/bench-peers.sh                          # 200x100/10, 1000x100/10, 2000x200/20
#   POINTS=200x100/10 DURATION=5 bash scripts/bench-peers.sh
#
# Steps: installs the peers' pinned packages (bench/peers/package-lock.json: bun, which brings its
# binary through an optional dependency, and ws) with `npm ci` from the npm registry, the only
# network use, and done here, never by the tests; builds the release binaries; checks that the
# machine is quiet (a warning, not a refusal: the table shows the other load of each run anyway);
# then runs `danmaku versus`, which writes the table into BENCHMARKS.md and each run's raw report
# into cli/benchmarks/versus-*.json.
#
# Needs: cargo, node and npm (Node 18 or later). Environment: POINTS (comma-separated
# VIEWERSxRATE/SENDERS; default a quiet room, 10 x 10/s, where a durable commit is most of the
# latency, then the issue's three points), DURATION, RAMP, DRAIN (seconds), SERVERS (default all four: ours,
# ours-cores (ours with a worker on every core), bun, node), MARKDOWN (default BENCHMARKS.md).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
POINTS="${POINTS:-10x10/1,200x100/10,1000x100/10,2000x200/20}"
DURATION="${DURATION:-10}"
RAMP="${RAMP:-5}"
DRAIN="${DRAIN:-5}"
SERVERS="${SERVERS:-ours,ours-cores,bun,node}"
MARKDOWN="${MARKDOWN:-BENCHMARKS.md}"

step() { printf '\n==> %s\n' "$*" >&2; }

command -v node >/dev/null || { echo "node is not installed (Node 18 or later)" >&2; exit 1; }
command -v npm >/dev/null || { echo "npm is not installed" >&2; exit 1; }

step "peers: npm ci in bench/peers (bun and ws, pinned by package-lock.json)"
(cd bench/peers && npm ci --no-audit --no-fund)
# bun's own postinstall puts the platform's binary in place of its placeholder; run it again in
# case this npm skipped install scripts.
if ! bench/peers/node_modules/.bin/bun --version >/dev/null 2>&1; then
  (cd bench/peers/node_modules/bun && node install.js)
fi
echo "bun $(bench/peers/node_modules/.bin/bun --version), node $(node --version)" >&2

step "build: cargo build --release --locked -p danmaku-cli -p ws-stream"
cargo build --release --locked -p danmaku-cli -p ws-stream

step "machine load"
read -r LOAD1 _ < /proc/loadavg
CORES="$(nproc)"
echo "load average (1 min) $LOAD1 on $CORES cores" >&2
if awk -v l="$LOAD1" -v c="$CORES" 'BEGIN { exit !(l > 0.25 * c) }'; then
  echo "WARNING: the machine is busy (load $LOAD1 on $CORES cores); the figures will be noisy." >&2
  echo "         Each row of the table shows the other load during its run; re-run when quiet." >&2
fi

step "danmaku versus"
target/release/danmaku versus \
  --servers "$SERVERS" \
  --point "$POINTS" \
  --duration "$DURATION" --ramp "$RAMP" --drain "$DRAIN" \
  --peers-dir bench/peers \
  --markdown "$MARKDOWN" \
  --json-dir cli/benchmarks
