#!/usr/bin/env bash
# Run danmaku as a cluster on one machine: two instances of each service on PostgreSQL and Redis,
# behind nginx, one address per service.
#
#   scripts/cluster.sh          # build, start everything, wait; Ctrl-C stops it all
#   scripts/cluster.sh stop     # from another terminal: stop the running cluster
#
#   nginx 127.0.0.1:8081 -> http-danmaku 127.0.0.1:9181, 127.0.0.1:9281
#   nginx 127.0.0.1:8082 -> ws-video     127.0.0.1:9182, 127.0.0.1:9282
#   nginx 127.0.0.1:8083 -> ws-stream    127.0.0.1:9183, 127.0.0.1:9283
#
# The proxy takes the services' usual ports, so the pages and the `danmaku` client work through
# it as they do with scripts/up.sh. nginx's configuration is deploy/nginx/cluster.conf; it runs
# as the invoking user with its pid, logs and temp files under the run directory. Each service's
# two instances share one PostgreSQL database (created if missing) and one Redis (DANMAKU_BUS).
#
# Settings (environment):
#   DANMAKU_CLUSTER_POSTGRES  the PostgreSQL server, without a database
#                             (default postgres://postgres@127.0.0.1:5432); the databases are
#                             danmaku_http_danmaku, danmaku_ws_video and danmaku_ws_stream
#   DANMAKU_BUS               the Redis the instances share rooms through
#                             (default redis://127.0.0.1:6379/); it must answer
#   DANMAKU_CLUSTER_DIR       the run directory (default data/cluster under the repo): logs/ has
#                             each instance's log, nginx/ is nginx's prefix
#   DANMAKU_ALLOWED_HOSTS ... other DANMAKU_* settings pass to every instance, as with up.sh;
#                             the script sets DANMAKU_STORE, DANMAKU_BUS, DANMAKU_BIND
#                             (127.0.0.1: only nginx reaches the instances) and
#                             DANMAKU_TRUSTED_PROXIES (127.0.0.1: nginx's X-Forwarded-For) itself.
#
# Needs: cargo (release build, as up.sh), psql and pg_isready (postgresql-client), redis-cli
# (redis-tools), and nginx. When nginx is missing and this runs as root on Debian, it installs
# Debian's `nginx` package (`apt-get install nginx`); the package's own system service is never
# used (on a machine whose init starts it, it listens on port 80 as usual, untouched by this).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export RUST_LOG="${RUST_LOG:-info}"
RUN_DIR="${DANMAKU_CLUSTER_DIR:-$ROOT/data/cluster}"
PG_SERVER="${DANMAKU_CLUSTER_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
PG_SERVER="${PG_SERVER%/}"
BUS="${DANMAKU_BUS:-redis://127.0.0.1:6379/}"
NGINX_CONF="$ROOT/deploy/nginx/cluster.conf"
# The instances trust X-Forwarded-For from nginx, which reaches them from loopback.
TRUSTED_PROXIES=127.0.0.1

# binary:proxy port:first instance's port:second instance's port, in start order. The ports must
# match deploy/nginx/cluster.conf.
SERVICES=(http-danmaku:8081:9181:9281 ws-video:8082:9182:9282 ws-stream:8083:9183:9283)

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'cluster.sh: error: %s\n' "$*" >&2
  exit 1
}

# Whether `pid` is alive and runs a command line containing `what` (so a recycled pid is never
# signalled).
is_ours() {
  local pid="$1" what="$2"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$what"
}

########################################################################## stop
# `cluster.sh stop`: SIGTERM to the script that started the cluster, whose trap stops everything
# and exits; if that script is gone (killed with -9), its children are stopped one by one from
# the list it left.
stop_running() {
  local pid
  pid="$(cat "$RUN_DIR/cluster.pid" 2>/dev/null || true)"
  if is_ours "$pid" cluster.sh; then
    log "stopping the cluster (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || {
        log "stopped"
        return 0
      }
      sleep 1
    done
    die "the cluster (pid $pid) did not stop within 60 s"
  fi
  local name child_pid signal left=()
  if [[ -f "$RUN_DIR/children" ]]; then
    while read -r name child_pid; do
      if is_ours "$child_pid" "$name"; then
        signal=TERM
        [[ "$name" == nginx ]] && signal=QUIT
        log "stopping $name (pid $child_pid), left by a cluster.sh that is gone"
        kill "-$signal" "$child_pid" 2>/dev/null || true
        left+=("$child_pid")
      fi
    done <"$RUN_DIR/children"
  fi
  if [[ ${#left[@]} -eq 0 ]]; then
    log "no cluster is running (run directory $RUN_DIR)"
  fi
  # They are not this shell's children: poll until each is gone.
  for _ in $(seq 1 60); do
    local alive=0
    for child_pid in ${left[@]+"${left[@]}"}; do
      kill -0 "$child_pid" 2>/dev/null && alive=1
    done
    [[ $alive -eq 0 ]] && break
    sleep 1
  done
  rm -f "$RUN_DIR/children" "$RUN_DIR/cluster.pid"
}

case "${1:-start}" in
  start) ;;
  stop)
    stop_running
    exit 0
    ;;
  -h | --help | help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: scripts/cluster.sh [start|stop]" >&2
    exit 2
    ;;
esac

########################################################################## preflight
if is_ours "$(cat "$RUN_DIR/cluster.pid" 2>/dev/null || true)" cluster.sh; then
  die "a cluster is already running from $RUN_DIR (scripts/cluster.sh stop stops it)"
fi
for var in DANMAKU_PORT DANMAKU_STORE; do
  if [[ -n "${!var:-}" ]]; then
    echo "cluster.sh: ignoring ${var}=${!var}; the script sets it for each instance" >&2
  fi
done

# nginx: on PATH, or in /usr/sbin (not on an ordinary user's PATH on Debian), or installed now.
NGINX="$(command -v nginx || true)"
[[ -z "$NGINX" && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
if [[ -z "$NGINX" ]]; then
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "nginx is missing: installing Debian's nginx package (apt-get install nginx)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx >/dev/null ||
      { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends nginx >/dev/null; }
    NGINX=/usr/sbin/nginx
  else
    die "nginx not found; install it (Debian: sudo apt-get install nginx) and run this again"
  fi
fi

for tool in psql pg_isready; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "$tool not found; install PostgreSQL's client (Debian: apt-get install postgresql-client)"
done
command -v redis-cli >/dev/null 2>&1 ||
  die "redis-cli not found; install Redis's tools (Debian: apt-get install redis-tools)"

# PostgreSQL: the server answers, and each service has its database (one per service, as each
# has its own SQLite file under up.sh: the services' channel names would collide in one).
case "$PG_SERVER" in
  postgres://* | postgresql://*) ;;
  *) die "DANMAKU_CLUSTER_POSTGRES must be a postgres:// URL without a database, not $PG_SERVER" ;;
esac
pg_isready -q -d "$PG_SERVER/postgres" ||
  die "no PostgreSQL answers at ${PG_SERVER#*@} (DANMAKU_CLUSTER_POSTGRES)"
database_of() { local name="$1" && echo "danmaku_${name//-/_}"; }
for svc in "${SERVICES[@]}"; do
  db="$(database_of "${svc%%:*}")"
  exists="$(psql -X -q -t -A -v ON_ERROR_STOP=1 -v db="$db" -d "$PG_SERVER/postgres" \
    <<<"SELECT 1 FROM pg_database WHERE datname = :'db';")" ||
    die "cannot query PostgreSQL at ${PG_SERVER#*@}"
  if [[ "$exists" != 1 ]]; then
    log "creating database $db"
    psql -X -q -v ON_ERROR_STOP=1 -v db="$db" -d "$PG_SERVER/postgres" \
      <<<'CREATE DATABASE :"db";' || die "cannot create database $db"
  fi
done

# Redis: host and port from redis://[user:password@]host:port[/db].
bus_authority="${BUS#*://}"
bus_authority="${bus_authority%%/*}"
bus_authority="${bus_authority##*@}"
bus_host="${bus_authority%:*}"
bus_port="${bus_authority##*:}"
[[ "$BUS" == redis://* && "$bus_port" =~ ^[0-9]+$ && -n "$bus_host" ]] ||
  die "DANMAKU_BUS must look like redis://host:port/, not $BUS"
bus_host="${bus_host#[}" && bus_host="${bus_host%]}"
[[ "$(redis-cli -h "$bus_host" -p "$bus_port" ping 2>/dev/null)" == PONG ]] ||
  die "no Redis answers at $bus_host:$bus_port (DANMAKU_BUS); start one, e.g.
  redis-server --daemonize yes --bind 127.0.0.1 --port $bus_port --save '' --appendonly no"

log "cargo build --release --bins"
cargo build --release --bins

########################################################################## start
mkdir -p "$RUN_DIR/logs" "$RUN_DIR/nginx/logs" "$RUN_DIR/nginx/temp"
echo "$$" >"$RUN_DIR/cluster.pid"
: >"$RUN_DIR/children"

# Every proxied connection costs nginx two descriptors, and each instance one per client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PIDS=()
NAMES=()
STOPPING=0

# Stops what was started: nginx first with SIGQUIT (it stops accepting, and lets the open
# connections finish), then every instance with SIGTERM (their graceful path: WebSockets get
# close code 1001 through the proxy, long polls answer), then waits for all. Runs once.
stop_all() {
  if [[ $STOPPING -eq 1 ]]; then
    return
  fi
  STOPPING=1
  trap '' INT TERM # a second Ctrl-C must not cut the graceful stop short
  if [[ ${#PIDS[@]} -gt 0 ]]; then
    log "stopping: ${NAMES[*]}"
    local i
    for i in "${!PIDS[@]}"; do
      if [[ "${NAMES[$i]}" == nginx ]]; then
        kill -QUIT "${PIDS[$i]}" 2>/dev/null || true
      fi
    done
    for i in "${!PIDS[@]}"; do
      if [[ "${NAMES[$i]}" != nginx ]]; then
        kill -TERM "${PIDS[$i]}" 2>/dev/null || true
      fi
    done
    for i in "${!PIDS[@]}"; do
      wait "${PIDS[$i]}" 2>/dev/null || true
    done
    log "all stopped"
  fi
  rm -f "$RUN_DIR/children" "$RUN_DIR/cluster.pid"
}

# shellcheck disable=SC2317 # reached through the traps below
on_signal() {
  stop_all
  exit "$1"
}

trap stop_all EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# As in up.sh: children run in their own session so a Ctrl-C reaches only this script, which
# turns it into the graceful signals above.
LAUNCH=()
if command -v setsid >/dev/null 2>&1; then
  LAUNCH=(setsid)
fi

# Starts `name` with the rest of the arguments as its command line, its output in logs/LABEL.log.
launch() {
  local label="$1" name="$2"
  shift 2
  ${LAUNCH[@]+"${LAUNCH[@]}"} "$@" >>"$RUN_DIR/logs/$label.log" 2>&1 &
  PIDS+=("$!")
  NAMES+=("$label")
  echo "$name $!" >>"$RUN_DIR/children"
}

# Whether an HTTP GET of /healthz on 127.0.0.1:port answers 200 (bash's /dev/tcp: no curl needed).
healthy() {
  local port="$1" status
  status="$(
    exec 2>/dev/null
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$port" >&3
    IFS= read -r -t 5 line <&3 && printf '%s' "$line"
  )" || return 1
  [[ "$status" == "HTTP/1."?" 200"* ]]
}

# Waits up to 30 s for port to be healthy; gives up early if the process (index i) exited.
wait_healthy() {
  local port="$1" i="$2"
  for _ in $(seq 1 150); do
    healthy "$port" && return 0
    if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
      tail -n 20 "$RUN_DIR/logs/${NAMES[$i]}.log" >&2 || true
      die "${NAMES[$i]} exited during start (log: $RUN_DIR/logs/${NAMES[$i]}.log)"
    fi
    sleep 0.2
  done
  die "${NAMES[$i]} did not answer on port $port within 30 s (log: $RUN_DIR/logs/${NAMES[$i]}.log)"
}

for svc in "${SERVICES[@]}"; do
  IFS=: read -r name _ first second <<<"$svc"
  db="$(database_of "$name")"
  n=0
  for port in "$first" "$second"; do
    n=$((n + 1))
    log "starting ${name} #$n on 127.0.0.1:${port} (database $db)"
    launch "$name-$n" "$name" env -u DANMAKU_PORT \
      DANMAKU_BIND=127.0.0.1 \
      DANMAKU_STORE="$PG_SERVER/$db" \
      DANMAKU_BUS="$BUS" \
      DANMAKU_TRUSTED_PROXIES="$TRUSTED_PROXIES" \
      "target/release/$name" --port "$port"
  done
done
i=0
for svc in "${SERVICES[@]}"; do
  IFS=: read -r _ _ first second <<<"$svc"
  for port in "$first" "$second"; do
    wait_healthy "$port" "$i"
    i=$((i + 1))
  done
done

NGINX_ARGS=(-p "$RUN_DIR/nginx/" -c "$NGINX_CONF" -e "$RUN_DIR/nginx/logs/error.log")
if [[ $EUID -eq 0 ]]; then
  # As root, nginx's workers would switch to `nobody`: keep them the invoking user's too.
  NGINX_ARGS+=(-g "user $(id -un) $(id -gn);")
fi
"$NGINX" -q -t "${NGINX_ARGS[@]}" || die "nginx refused $NGINX_CONF"
log "starting nginx on 127.0.0.1:8081-8083 (log: $RUN_DIR/nginx/logs/error.log)"
launch nginx nginx "$NGINX" "${NGINX_ARGS[@]}"
nginx_index=$((${#PIDS[@]} - 1))
for svc in "${SERVICES[@]}"; do
  IFS=: read -r _ port _ _ <<<"$svc"
  wait_healthy "$port" "$nginx_index"
done

cat <<URLS

  danmaku is running as a cluster (Ctrl-C, or scripts/cluster.sh stop, stops it all):
    landing page   http://127.0.0.1:8081/index.html
    http-danmaku   http://127.0.0.1:8081/  -> 127.0.0.1:9181, 127.0.0.1:9281
    ws-video       http://127.0.0.1:8082/  -> 127.0.0.1:9182, 127.0.0.1:9282
    ws-stream      http://127.0.0.1:8083/  -> 127.0.0.1:9183, 127.0.0.1:9283
    store          ${PG_SERVER#*@}, databases danmaku_http_danmaku, danmaku_ws_video, danmaku_ws_stream
    bus            $bus_host:$bus_port
    logs           $RUN_DIR/logs/, nginx's in $RUN_DIR/nginx/logs/

URLS

# Block until any one child exits (or a trap fires), as up.sh does.
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
    log "${NAMES[$i]} exited (status ${status}); stopping the others"
    break
  fi
done

stop_all
exit "$status"
