#!/usr/bin/env bash
# Checks docker-compose.cluster.yml for real, end to end, and removes what it made:
#
#   scripts/compose-cluster-check.sh             # podman + podman-compose when installed, else docker compose
#   ENGINE=docker scripts/compose-cluster-check.sh
#   KEEP=1 scripts/compose-cluster-check.sh      # leave the cluster running at the end
#
# 1. builds the image (`ENGINE build -t danmaku:local .`; cached after the first time);
# 2. starts docker-compose.cluster.yml as the compose project `danmaku-cluster-check`, with the
#    instances' access log on (RUST_LOG), and waits until each service answers GET /healthz through
#    the proxy with the bus connected;
# 3. checks every one of the six instances from nginx's container, by its compose name: /healthz
#    `ok` with `"connected":true`; and, with podman, runs each container's healthcheck once
#    (`podman healthcheck run`: podman schedules them only under systemd) or, with Docker, waits
#    for compose's own verdict;
# 4. checks that an instance pointed at a database that does not exist stops at once, naming
#    DANMAKU_STORE and hiding the password;
# 5. uses the services through the proxy (scripts/compose_probe.py cluster): a long poll on one
#    http-danmaku instance woken by a post through the other, a video comment between two viewers,
#    a live room with two viewers, a host and a check-in; then checks in the instances' logs that
#    both instances of each service served those clients (least_conn spread them);
# 6. host names through the proxy: localhost, 127.0.0.1 and `nginx` are answered, another gets 421;
#    X-Forwarded-For: a client's forged header is replaced by nginx, and the instances log the
#    client nginx saw, not nginx's own address (they trust it, DANMAKU_TRUSTED_PROXIES);
# 7. stops the six instances with SIGTERM (`compose stop` of them) while a WebSocket is open through
#    the proxy to ws-video and ws-stream: each socket gets close code 1001, each instance exits 0
#    after logging "<service> stopped"; then stops the rest (nginx, redis, postgres exit 0);
# 8. `compose down` (keeping the volume), `up` again, and finds everything from step 5 in PostgreSQL;
# 9. on exit, whatever happened: `compose down -v` (containers and the project's volume) and the
#    project's network. The images stay.
#
# The project is `danmaku-cluster-check`, neither `danmaku-cluster` nor compose-check.sh's
# `danmaku-check`, so no one's data is touched; but it needs ports 8081-8083 free.
# Needs: podman with podman-compose (and, with podman's CNI network backend, the dnsname plugin:
# Debian's golang-github-containernetworking-plugin-dnsname) or docker with its compose plugin;
# the postgres:16, redis:7 and nginx:1.27 images; curl; python3.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PROJECT=danmaku-cluster-check
FILE=docker-compose.cluster.yml
IMAGE=danmaku:local
NETWORK="${PROJECT}_default"
INSTANCES=(http-danmaku-1 http-danmaku-2 ws-video-1 ws-video-2 ws-stream-1 ws-stream-2)
declare -A PORT_OF=([http-danmaku]=8081 [ws-video]=8082 [ws-stream]=8083)
PROBE=(python3 "$ROOT/scripts/compose_probe.py")
# The access log (debug) shows each request's client as the instance resolves it.
export RUST_LOG="info,actix_web::middleware::logger=debug"

say() { printf '\n==> %s\n' "$*"; }
fail() {
  printf 'compose-cluster-check: FAILED: %s\n' "$*" >&2
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
  podman) compose() { podman-compose -f "$FILE" -p "$PROJECT" "$@"; } ;;
  docker) compose() { docker compose -f "$FILE" -p "$PROJECT" "$@"; } ;;
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
  if [[ $status -ne 0 && -n "$(container_of nginx)" ]]; then
    say "the last lines of each container's log"
    for service in postgres postgres-init redis "${INSTANCES[@]}" nginx; do
      echo "--- $service"
      "$ENGINE" logs --tail 8 "$(container_of "$service")" 2>&1 || true
    done
  fi
  if [[ -n "${KEEP:-}" ]]; then
    say "KEEP is set: the project $PROJECT is still running (remove it: compose -f $FILE -p $PROJECT down -v)"
  else
    say "cleaning up: compose down -v"
    compose down -v >"$WORK/down.log" 2>&1 || cat "$WORK/down.log" >&2
    # podman-compose 1.0.3 leaves the project's network behind; docker compose removes it.
    "$ENGINE" network ls -q --filter "label=com.docker.compose.project=$PROJECT" |
      xargs -r "$ENGINE" network rm >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
  if [[ $status -eq 0 ]]; then
    say "compose-cluster-check passed ($ENGINE)"
  fi
}

# The container of a service, by the labels both podman-compose and docker compose set.
container_of() {
  "$ENGINE" ps -a --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | head -n 1
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

say "compose -f $FILE up -d (project $PROJECT)"
started=$(date +%s)
compose up -d >"$WORK/up.log" 2>&1 || {
  cat "$WORK/up.log" >&2
  fail "compose up failed"
}
"${PROBE[@]}" cluster-wait
echo "  up and healthy through the proxy in $(($(date +%s) - started)) s"
NGINX="$(container_of nginx)"

say "each instance, from nginx's container by its compose name"
# GET /healthz over bash's /dev/tcp (the nginx image has bash; curl is not in every image).
instance_health() {
  # shellcheck disable=SC2016 # expanded by the container's bash, from its arguments
  "$ENGINE" exec "$NGINX" bash -c '
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n" "$2" >&3
    tail -n 1 <&3' _ "$1" "$2"
}
for instance in "${INSTANCES[@]}"; do
  port="${PORT_OF[${instance%-*}]}"
  body="$(instance_health "$instance" "$port" 2>&1)" || fail "$instance: no answer on $port: $body"
  [[ "$body" == *'"status":"ok"'* && "$body" == *'"connected":true'* ]] ||
    fail "$instance: GET /healthz answered $body"
  restarts="$("$ENGINE" inspect --format '{{.RestartCount}}' "$(container_of "$instance")")"
  echo "  ok  $instance:$port  $body  (restarted $restarts times while waiting for its database)"
done
healthy() { # healthy SERVICE: its container's own healthcheck passes
  local name
  name="$(container_of "$1")"
  if [[ "$ENGINE" == podman ]]; then
    podman healthcheck run "$name" >/dev/null 2>&1
  else
    [[ "$(docker inspect --format '{{.State.Health.Status}}' "$name")" == healthy ]]
  fi
}
for service in postgres redis "${INSTANCES[@]}"; do
  for _ in $(seq 60); do
    healthy "$service" && break
    sleep 1
  done
  healthy "$service" || fail "$service: its healthcheck does not pass"
done
echo "  ok  the healthchecks of postgres, redis and the six instances pass"
exit_code="$("$ENGINE" inspect --format '{{.State.ExitCode}}' "$(container_of postgres-init)")"
[[ "$exit_code" == 0 ]] || fail "postgres-init exited with $exit_code"
echo "  ok  postgres-init created the databases and exited 0"

say "an instance whose database does not exist stops at once, with the reason"
started=$(date +%s)
if "$ENGINE" run --rm --network "$NETWORK" \
  -e DANMAKU_STORE=postgres://danmaku:danmaku-local-only@postgres:5432/no_such_database \
  "$IMAGE" http-danmaku >"$WORK/nodb.log" 2>&1; then
  fail "http-danmaku started without its database"
fi
grep -q 'DANMAKU_STORE' "$WORK/nodb.log" || {
  cat "$WORK/nodb.log" >&2
  fail "the failed start does not name DANMAKU_STORE"
}
! grep -q 'danmaku-local-only' "$WORK/nodb.log" || fail "the failed start shows the password"
echo "  ok  exited non-zero after $(($(date +%s) - started)) s: $(grep -m1 DANMAKU_STORE "$WORK/nodb.log" | cut -c1-160)"

say "using the services through the proxy, two clients at a time"
TAG="$(date +%s)"
"${PROBE[@]}" cluster "$TAG" "$WORK/state.json"
# Which instance served what, from the instances' logs.
logs_of() { "$ENGINE" logs "$(container_of "$1")" 2>&1; }
room="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["room"])' "$WORK/state.json")"
for n in 1 2; do
  logs_of "http-danmaku-$n" >"$WORK/http-danmaku-$n.log"
  logs_of "ws-video-$n" >"$WORK/ws-video-$n.log"
  logs_of "ws-stream-$n" >"$WORK/ws-stream-$n.log"
  grep -q "/api/rooms/cluster-$TAG/danmaku" "$WORK/http-danmaku-$n.log" ||
    fail "http-danmaku-$n served none of the check's requests"
  grep -q "opened (video cluster-$TAG)" "$WORK/ws-video-$n.log" ||
    fail "ws-video-$n got none of the two viewers"
done
echo "  ok  both http-danmaku instances served the check's polls and posts"
echo "  ok  each ws-video instance got one of the two viewers of video cluster-$TAG"
viewers_on() { grep -o "opened (room $room, viewer [a-z]*)" "$WORK/ws-stream-$1.log" | sed 's/.* //; s/)//' | sort | tr '\n' ' '; }
on1="$(viewers_on 1)" on2="$(viewers_on 2)"
[[ -n "$on1" && -n "$on2" ]] ||
  fail "alice and bob landed on one instance (ws-stream-1: ${on1:-none}, ws-stream-2: ${on2:-none})"
echo "  ok  ws-stream-1 served ${on1% }, ws-stream-2 served ${on2% } (room $room)"

say "host names and X-Forwarded-For through the proxy"
host_status() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Host: $2" "http://127.0.0.1:$1/healthz"
}
for service in http-danmaku ws-video ws-stream; do
  port="${PORT_OF[$service]}"
  for host in "localhost:$port" "127.0.0.1:$port" "nginx:$port"; do
    status="$(host_status "$port" "$host")"
    [[ "$status" == 200 ]] || fail "$service answered Host: $host with $status, not 200"
  done
  status="$(host_status "$port" "evil.example:$port")"
  [[ "$status" == 421 ]] || fail "$service answered Host: evil.example with $status, not 421"
  echo "  ok  $service answers localhost, 127.0.0.1 and nginx, refuses evil.example (421)"
done
nginx_ip="$("$ENGINE" inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$NGINX")"
xff_path="/api/rooms/xff-$TAG/danmaku"
curl -s -o /dev/null --max-time 5 -H 'X-Forwarded-For: 203.0.113.7' "http://127.0.0.1:8081$xff_path" ||
  fail "GET $xff_path through the proxy failed"
sleep 0.5
line="$(for n in 1 2; do logs_of "http-danmaku-$n"; done | grep -F "\"GET $xff_path " | head -n 1)"
[[ -n "$line" ]] || fail "no instance logged GET $xff_path"
client="$(sed -E 's/^\[[^]]*\] //; s/ .*//' <<<"$line")"
[[ "$client" != 203.0.113.7 ]] || fail "the instance believed the client's own X-Forwarded-For: $line"
[[ "$client" != "$nginx_ip" ]] || fail "the instance saw nginx ($nginx_ip) as the client: $line"
echo "  ok  the client's forged X-Forwarded-For was replaced; the instance logged the client nginx saw ($client), not nginx ($nginx_ip)"

say "graceful stop: SIGTERM to the six instances with a WebSocket open through the proxy"
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
compose stop "${INSTANCES[@]}" >"$WORK/stop.log" 2>&1 || {
  cat "$WORK/stop.log" >&2
  fail "compose stop of the instances failed"
}
echo "  compose stop of the six instances took $(($(date +%s) - started)) s"
for pid in "${HOLDERS[@]}"; do
  wait "$pid" || fail "a WebSocket holder failed"
done
HOLDERS=()
for service in ws-video ws-stream; do
  code="$(cat "$WORK/hold-$service")"
  [[ "$code" == 1001 ]] || fail "$service closed its WebSocket with $code, not 1001"
  echo "  ok  $service closed the WebSocket open through the proxy with 1001"
done
for instance in "${INSTANCES[@]}"; do
  name="$(container_of "$instance")"
  exit_code="$("$ENGINE" inspect --format '{{.State.ExitCode}}' "$name")"
  [[ "$exit_code" == 0 ]] || fail "$instance exited with status $exit_code (137 means it was killed)"
  logs_of "$instance" >"$WORK/$instance.log"
  grep -q "${instance%-*} stopped" "$WORK/$instance.log" || {
    tail -20 "$WORK/$instance.log" >&2
    fail "$instance did not log a graceful stop"
  }
done
echo "  ok  the six instances exited with status 0 after logging \"<service> stopped\""
compose stop >"$WORK/stop.log" 2>&1 || {
  cat "$WORK/stop.log" >&2
  fail "compose stop failed"
}
for service in nginx redis; do
  exit_code="$("$ENGINE" inspect --format '{{.State.ExitCode}}' "$(container_of "$service")")"
  [[ "$exit_code" == 0 ]] || fail "$service exited with status $exit_code"
done
echo "  ok  then nginx and redis stopped with status 0"
# PostgreSQL's own word that it stopped cleanly. The official image runs the server as PID 1, so
# it gets the stop signal itself. A stand-in image whose PID 1 is `su` (as made by a local script
# when no registry is reachable) cannot: su passes SIGTERM on and SIGKILLs the server 2 s later,
# maybe in its shutdown checkpoint. That is said, not failed: the restart below then shows that
# nothing stored was lost (PostgreSQL recovers from its write-ahead log).
name="$(container_of postgres)"
exit_code="$("$ENGINE" inspect --format '{{.State.ExitCode}}' "$name")"
# From the last shutdown request on: the official image's first start also stops a server (the
# temporary one of its initialisation), which must not count.
logs_of postgres | awk '/received (smart|fast|immediate) shutdown request/ { n = 0 } { tail[n++] = $0 }
  END { for (i = 0; i < n; i++) print tail[i] }' >"$WORK/postgres.log"
if grep -q 'database system is shut down' "$WORK/postgres.log"; then
  echo "  ok  postgres logged \"database system is shut down\" (exit status $exit_code)"
elif grep -q 'Session terminated, killing shell' "$WORK/postgres.log"; then
  echo "  NOTE postgres: this image runs su as PID 1, which killed the server during its shutdown"
  echo "       (exit status $exit_code); not the official image's behaviour. Checking the data below."
else
  tail -20 "$WORK/postgres.log" >&2
  fail "postgres did not log a clean shutdown (exit status $exit_code)"
fi

say "compose down (keeping the volume), then up again"
compose down >"$WORK/down.log" 2>&1 || {
  cat "$WORK/down.log" >&2
  fail "compose down failed"
}
[[ -z "$(container_of postgres)" ]] || fail "compose down left containers behind"
compose up -d >"$WORK/up.log" 2>&1 || {
  cat "$WORK/up.log" >&2
  fail "compose up failed the second time"
}
"${PROBE[@]}" cluster-wait
"${PROBE[@]}" cluster-persisted "$WORK/state.json"
if logs_of postgres | grep -q 'automatic recovery in progress'; then
  echo "  (postgres recovered from its write-ahead log at this start, as after a crash)"
fi
