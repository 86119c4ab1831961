#!/bin/sh
# Entrypoint of `cognition-postgres:local` (compose/build-images.sh): PostgreSQL 15 from Debian's
# packages, started like the official `postgres` image for the variables the compose stacks use:
#   POSTGRES_PASSWORD   required on first start: the password of POSTGRES_USER
#   POSTGRES_USER       the superuser (default: postgres)
#   POSTGRES_DB         a database created on first start (default: POSTGRES_USER)
#   PGDATA              the data folder (default: /var/lib/postgresql/data)
#   POSTGRES_INITDB_ARGS  extra initdb arguments
#   POSTGRES_FSYNC      on (default) | off — off only for throwaway test databases
# On first start (no PG_VERSION in PGDATA) it runs initdb as the `postgres` user (uid 999);
# started as root it first gives PGDATA to that user and drops to it. The server listens on
# every interface with password (scram-sha-256) authentication for TCP clients and trusts the
# local socket (/run/postgresql), like the official image. Arguments starting with `-` are
# postgres options (`command: ["postgres", "-c", "fsync=off"]` works as with the official one).
set -eu

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA
fail() { echo "cognition-postgres: $*" >&2; exit 1; }

if [ $# -eq 0 ] || [ "${1#-}" != "$1" ]; then
  set -- postgres "$@"
fi
[ "$1" = postgres ] || exec "$@"

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /run/postgresql
  [ "$(stat -c %U "$PGDATA")" = postgres ] || chown -R postgres:postgres "$PGDATA"
  chown postgres:postgres /run/postgresql
  chmod 700 "$PGDATA"
  chmod 2775 /run/postgresql
  # busybox su keeps the environment with -p; the words after `--` become $0 and $@ of the
  # command (without `--`, su would take a `-c` among the postgres options as its own).
  exec su -p -s /bin/sh -c 'exec "$0" "$@"' postgres -- "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  [ -n "${POSTGRES_PASSWORD:-}" ] ||
    fail "POSTGRES_PASSWORD must be set on first start (the password of POSTGRES_USER)"
  mkdir -p "$PGDATA" 2>/dev/null || true
  [ -w "$PGDATA" ] || fail "$PGDATA is not writable by uid $(id -u)"
  user="${POSTGRES_USER:-postgres}"
  db="${POSTGRES_DB:-$user}"
  case "$user$db" in
    *'"'* | *'\'*) fail "POSTGRES_USER and POSTGRES_DB may not contain quotes or backslashes" ;;
  esac
  nosync=""
  [ "${POSTGRES_FSYNC:-on}" != off ] || nosync=--no-sync
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  # shellcheck disable=SC2086 # word lists
  initdb -D "$PGDATA" --username="$user" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C $nosync ${POSTGRES_INITDB_ARGS:-} ||
    { rm -f "$pwfile"; fail "initdb failed"; }
  rm -f "$pwfile"
  printf '\n# cognition-postgres: password authentication from anywhere\nhost all all all scram-sha-256\n' \
    >> "$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    printf 'CREATE DATABASE "%s";\n' "$db" |
      postgres --single -D "$PGDATA" -c jit=off -c fsync="${POSTGRES_FSYNC:-on}" postgres >/dev/null ||
      fail "creating database $db failed"
  fi
  echo "cognition-postgres: initialized $PGDATA (user $user, database $db)"
fi

shift
exec postgres -c listen_addresses='*' -c unix_socket_directories=/run/postgresql -c jit=off \
  -c fsync="${POSTGRES_FSYNC:-on}" "$@"
