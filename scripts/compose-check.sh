#!/usr/bin/env bash
# Checks the Dockerfile and docker-compose.yml for real, end to end, and removes what it made:
#
#   scripts/compose-check.sh             # podman + podman-compose when installed, else docker compose
#   ENGINE=docker scripts/compose-check.sh
#   KEEP=1 scripts/compose-check.sh      # leave the services running at the end
#
# 1. builds the image (`ENGINE build -t danmaku:local .`) and says how long it took;
# 2. starts docker-compose.yml as the compose project `danmaku-check` and waits for GET /healthz
#    of all three services;
# 3. uses them as a client would (scripts/compose_probe.py, Python's standard library only):
#    pages, an HTTP comment read back with the cursor, a video comment over WebSocket (ack,
#    fan-out, range, ping) found again over HTTP, DPlayer and Bilibili XML, a created live room
#    with a host and a viewer, a comment between them, a check-in; then checks that each service
#    answers to localhost, 127.0.0.1 and its compose service name and refuses another host (421);
# 4. stops the services with SIGTERM (`compose stop`) while a WebSocket is open on each WebSocket
#    service, and checks that each socket got close code 1001, each container exited with status
#    0 (not killed at the end of the grace period) and logged "<service> stopped";
# 5. removes the containers (`compose down`, keeping the named volume), starts them again and
#    checks that everything stored in step 3 is still there;
# 6. on exit, whatever happened: `compose down -v` (containers and the project's volume) and the
#    project's network. The image stays, so the next run builds from cache.
#
# The project is `danmaku-check`, not `danmaku`, so the check never touches the data of a
# `danmaku` project you run yourself; but it needs ports 8081-8083 free.
# Needs: podman with podman-compose (Debian: `apt-get install podman podman-compose`) or docker
# with its compose plugin; curl; python3.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PROJECT=danmaku-check
IMAGE=danmaku:local
SERVICES=(http-danmaku ws-video ws-stream)
PROBE=(python3 "$ROOT/scripts/compose_probe.py")

say() { printf '\n==> %s\n' "$*"; }
fail() {
  printf 'compose-check: FAILED: %s\n' "$*" >&2
  exit 1
}

if [[ -z "${ENGINE:-}" ]]; then
  if command -v podman >/dev/null && command -v podman-compose >/dev/null; then
    ENGINE=podman
  elif command -v docker >/dev/null; then
    ENGINE=docker
  else
    fail "no container engine: install podman and podman-compose, or docker"
  fi
fi
case "$ENGINE" in
  podman) compose() { podman-compose -p "$PROJECT" "$@"; } ;;
  docker) compose() { docker compose -p "$PROJECT" "$@"; } ;;
  *) fail "ENGINE must be podman or docker, not $ENGINE" ;;
esac
for tool in curl python3; do
  command -v "$tool" >/dev/null || fail "$tool is needed"
done

WORK="$(mktemp -d)"
HOLDERS=()
cleanup() {
  local status=$?
  for pid in ${HOLDERS[@]+"${HOLDERS[@]}"}; do
    kill "$pid" 2>/dev/null || true
  done
  if [[ -n "${KEEP:-}" ]]; then
    say "KEEP is set: the project $PROJECT is still running (remove it: compose -p $PROJECT down -v)"
  else
    say "cleaning up: compose down -v"
    compose down -v >"$WORK/down.log" 2>&1 || cat "$WORK/down.log" >&2
    # podman-compose 1.0.3 leaves the project's network behind; docker compose removes it.
    "$ENGINE" network ls -q --filter "label=com.docker.compose.project=$PROJECT" |
      xargs -r "$ENGINE" network rm >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
  if [[ $status -eq 0 ]]; then
    say "compose-check passed ($ENGINE)"
  fi
}

for port in 8081 8082 8083; do
  if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then
    fail "port $port is in use; stop what runs there first"
  fi
done
trap cleanup EXIT

say "$ENGINE build -t $IMAGE . (the first build compiles everything: many minutes)"
started=$(date +%s)
"$ENGINE" build -t "$IMAGE" . >"$WORK/build.log" 2>&1 || {
  tail -40 "$WORK/build.log" >&2
  fail "the image did not build"
}
echo "  built in $(($(date +%s) - started)) s"

say "compose up -d (project $PROJECT)"
compose up -d >"$WORK/up.log" 2>&1 || {
  cat "$WORK/up.log" >&2
  fail "compose up failed"
}
"${PROBE[@]}" wait

say "using the services"
"${PROBE[@]}" exercise "compose-check $(date +%s)" "$WORK/state.json"

say "host names: the published ports and the service names are answered, other names get 421"
declare -A PORT_OF=([http-danmaku]=8081 [ws-video]=8082 [ws-stream]=8083)
host_status() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Host: $2" "http://127.0.0.1:$1/healthz"
}
for service in "${SERVICES[@]}"; do
  port="${PORT_OF[$service]}"
  for host in "localhost:$port" "127.0.0.1:$port" "$service:$port"; do
    status="$(host_status "$port" "$host")"
    [[ "$status" == 200 ]] || fail "$service answered Host: $host with $status, not 200"
  done
  status="$(host_status "$port" "evil.example:$port")"
  [[ "$status" == 421 ]] || fail "$service answered Host: evil.example with $status, not 421"
  echo "  ok  $service answers localhost, 127.0.0.1 and $service, refuses evil.example (421)"
done

# The container of a service, by the labels both podman-compose and docker compose set.
container_of() {
  "$ENGINE" ps -a --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | head -n 1
}

say "graceful stop: SIGTERM with a WebSocket open on ws-video and ws-stream"
for service in ws-video ws-stream; do
  "${PROBE[@]}" hold "$service" "$WORK/hold-$service" &
  HOLDERS+=("$!")
done
for service in ws-video ws-stream; do
  for _ in $(seq 100); do
    [[ -e "$WORK/hold-$service.ready" ]] && break
    sleep 0.1
  done
  [[ -e "$WORK/hold-$service.ready" ]] || fail "the WebSocket to $service did not open"
done
started=$(date +%s)
compose stop >"$WORK/stop.log" 2>&1 || {
  cat "$WORK/stop.log" >&2
  fail "compose stop failed"
}
echo "  compose stop took $(($(date +%s) - started)) s"
for pid in "${HOLDERS[@]}"; do
  wait "$pid" || fail "a WebSocket holder failed"
done
HOLDERS=()
for service in ws-video ws-stream; do
  code="$(cat "$WORK/hold-$service")"
  [[ "$code" == 1001 ]] || fail "$service closed its WebSocket with $code, not 1001"
  echo "  ok  $service closed the open WebSocket with 1001"
done
for service in "${SERVICES[@]}"; do
  name="$(container_of "$service")"
  [[ -n "$name" ]] || fail "no container for $service"
  exit_code="$("$ENGINE" inspect --format '{{.State.ExitCode}}' "$name")"
  [[ "$exit_code" == 0 ]] || fail "$service exited with status $exit_code (137 means it was killed)"
  "$ENGINE" logs "$name" >"$WORK/$service.log" 2>&1
  grep -q "$service stopped" "$WORK/$service.log" || {
    tail -20 "$WORK/$service.log" >&2
    fail "$service did not log a graceful stop"
  }
  echo "  ok  $service exited with status 0 after logging \"$service stopped\""
done

say "compose down (keeping the volume), then up again"
compose down >"$WORK/down.log" 2>&1 || {
  cat "$WORK/down.log" >&2
  fail "compose down failed"
}
[[ -z "$(container_of http-danmaku)" ]] || fail "compose down left containers behind"
compose up -d >"$WORK/up.log" 2>&1 || {
  cat "$WORK/up.log" >&2
  fail "compose up failed the second time"
}
"${PROBE[@]}" wait
"${PROBE[@]}" persisted "$WORK/state.json"
