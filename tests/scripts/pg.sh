#!/usr/bin/env bash
# Throwaway PostgreSQL cluster for tests.
#   tests/scripts/pg.sh start   -> installs postgresql if missing, starts a cluster, prints its URL
#   tests/scripts/pg.sh stop    -> stops it and removes its data
# Idempotent: `start` on a running cluster only prints the URL. fsync is off; the cluster lives
# under ${COGNITION_PG_DIR:-/tmp/cognition-pg} and listens on 127.0.0.1:${COGNITION_PG_PORT:-25432}.
set -euo pipefail
dir=${COGNITION_PG_DIR:-/tmp/cognition-pg}
port=${COGNITION_PG_PORT:-25432}
url="postgres://postgres@127.0.0.1:${port}/postgres"

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

install() {
  if [ -z "$(bindir)" ]; then
    echo "pg.sh: installing postgresql (apt)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || true
    apt-get install -y -qq postgresql >&2
  fi
}

case "${1:-start}" in
  start)
    install
    bin=$(bindir)
    if as_pg "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then echo "$url"; exit 0; fi
    rm -rf "$dir"; mkdir -p "$dir"; chown postgres:postgres "$dir" 2>/dev/null || true
    as_pg "$bin/initdb" -D "$dir" -U postgres -A trust --no-sync >/dev/null
    as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -o \
      "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
      start >/dev/null
    echo "$url"
    ;;
  stop)
    bin=$(bindir) || exit 0
    as_pg "$bin/pg_ctl" -D "$dir" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  url) echo "$url" ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
