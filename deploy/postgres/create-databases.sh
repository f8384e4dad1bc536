#!/bin/sh
# Creates the cluster's three databases, one per service, when they are missing:
# danmaku_http_danmaku, danmaku_ws_video and danmaku_ws_stream (the names scripts/cluster.sh uses).
# One each, as each service has its own SQLite file otherwise: the services' channel names would
# collide in one database. The services create their tables themselves (migrations at start).
#
# Run by the one-shot `postgres-init` service of docker-compose.cluster.yml, in the postgres
# image (psql and pg_isready), with the server and role in PGHOST, PGUSER, PGPASSWORD and
# PGDATABASE. It waits for the server (60 s at most: the first start runs initdb), then creates
# what is missing, so it does its work on a fresh volume and nothing on an old one. A script in
# the image's /docker-entrypoint-initdb.d would run only on an empty data directory, and not at
# all in images without that hook; this works with any image that has psql.
set -eu

tries=0
until pg_isready -q; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "create-databases: no PostgreSQL answers at ${PGHOST:-the default host} after 60 s" >&2
    exit 1
  fi
  sleep 1
done

for db in danmaku_http_danmaku danmaku_ws_video danmaku_ws_stream; do
  # CREATE DATABASE cannot run in a function or DO block; \gexec runs the generated statement
  # only when the SELECT returns a row, i.e. when the database is missing.
  psql -X -q -v ON_ERROR_STOP=1 -v db="$db" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db')
\gexec
SQL
  echo "create-databases: $db is there"
done
