#!/usr/bin/env bash
# Build and run the whole danmaku system on its embedded defaults, from a fresh clone, no Docker:
#
#   scripts/up.sh
#
# Builds the release binaries, starts http-danmaku (8081), ws-video (8082) and ws-stream (8083) in
# the background with their logs on this terminal, and waits. Ctrl-C, a TERM to this script, or the
# exit of any one service sends SIGTERM to all three (their graceful path) and waits for them.
#
# Settings pass through the environment to all three (DANMAKU_BIND, DANMAKU_RATE_PER_SEC, ...;
# see `target/release/<binary> --help`). RUST_LOG defaults to info. DANMAKU_PORT cannot be shared,
# so it is removed for each child and every service gets --port explicitly. Each service keeps its
# default database, data/<binary>.db under the repo root.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export RUST_LOG="${RUST_LOG:-info}"

# binary:port, in start order.
SERVICES=(http-danmaku:8081 ws-video:8082 ws-stream:8083)

if [[ -n "${DANMAKU_PORT:-}" ]]; then
  echo "up.sh: ignoring DANMAKU_PORT=${DANMAKU_PORT}; each service gets its own --port" >&2
fi
if [[ -n "${DANMAKU_STORE:-}" ]]; then
  echo "up.sh: warning: DANMAKU_STORE=${DANMAKU_STORE} applies to all three services (one shared store)" >&2
fi

echo "==> cargo build --release --bins"
cargo build --release --bins

PIDS=()
NAMES=()
STOPPING=0

# Send SIGTERM to every child still running and wait for each. Runs once, whatever called it.
stop_all() {
  if [[ $STOPPING -eq 1 ]]; then
    return
  fi
  STOPPING=1
  trap '' INT TERM # a second Ctrl-C must not cut the graceful stop short
  if [[ ${#PIDS[@]} -eq 0 ]]; then
    return
  fi
  echo "==> stopping: SIGTERM to ${NAMES[*]}" >&2
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  echo "==> all stopped" >&2
}

on_signal() {
  stop_all
  exit "$1"
}

trap stop_all EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# Children run in their own session (setsid) so a Ctrl-C on the terminal reaches only this script,
# which turns it into SIGTERM: actix treats SIGINT as a forced stop, SIGTERM as the graceful one.
# Without job control a background child is never a process-group leader, so setsid execs in place
# and $! is the service's own pid. Where setsid is missing (macOS), children share the terminal
# and also see the Ctrl-C.
LAUNCH=()
if command -v setsid >/dev/null 2>&1; then
  LAUNCH=(setsid)
fi

for svc in "${SERVICES[@]}"; do
  name="${svc%%:*}"
  port="${svc##*:}"
  echo "==> starting ${name} on port ${port}"
  env -u DANMAKU_PORT ${LAUNCH[@]+"${LAUNCH[@]}"} "target/release/${name}" --port "$port" &
  PIDS+=("$!")
  NAMES+=("$name")
done

# The address to print: loopback when bound to every interface (or left at the default).
host="${DANMAKU_BIND:-127.0.0.1}"
case "$host" in
  0.0.0.0 | :: | "[::]") host=127.0.0.1 ;;
  *:*) host="[${host#[}" && host="${host%]}]" ;; # bare IPv6 needs brackets in a URL
esac

cat <<URLS

  danmaku is running (Ctrl-C stops all three):
    landing page   http://${host}:8081/index.html
    http-danmaku   http://${host}:8081/
    ws-video       http://${host}:8082/
    ws-stream      http://${host}:8083/

URLS

# Block until any one child exits (or a trap fires). `wait -n` needs bash >= 4.3; older shells
# (macOS's 3.2) poll instead.
status=0
if ((BASH_VERSINFO[0] > 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] >= 3))); then
  wait -n || status=$?
else
  while :; do
    for i in "${!PIDS[@]}"; do
      if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
        wait "${PIDS[$i]}" || status=$?
        break 2
      fi
    done
    sleep 1
  done
fi

for i in "${!PIDS[@]}"; do
  if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
    echo "==> ${NAMES[$i]} exited (status ${status}); stopping the others" >&2
    break
  fi
done

stop_all
exit "$status"
