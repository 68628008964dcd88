#!/bin/sh
# Stand-in for the official postgres image's entrypoint. On an empty data directory: initdb
# (POSTGRES_USER, POSTGRES_PASSWORD), then a temporary server listening on its Unix socket only
# creates POSTGRES_DB and runs what the real image runs there (/docker-entrypoint-initdb.d), then
# stops; only after that does the real server listen on TCP. A readiness check over the socket
# says "ready" during that first phase; one over TCP does not.
# STANDIN_INIT_SECONDS (default 30) stands for the time a deployment's init scripts take;
# creating /tmp/standin-init-done ends that phase sooner (image-test does, once it has checked
# the healthcheck during it).
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ "${1:-postgres}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    -D "$PGDATA" >/dev/null
  rm -f "$pwfile"
  printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
  if [ "$db" != postgres ]; then
    echo 'CREATE DATABASE :"db";' |
      psql -v ON_ERROR_STOP=1 --username="$user" --dbname=postgres --set=db="$db" >/dev/null
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    # shellcheck disable=SC1090
    case "$f" in
      *.sh) . "$f" ;;
      *.sql) psql -v ON_ERROR_STOP=1 --username="$user" --dbname="$db" -f "$f" ;;
    esac
  done
  waited=0
  while [ "$waited" -lt "${STANDIN_INIT_SECONDS:-30}" ] && [ ! -e /tmp/standin-init-done ]; do
    sleep 1
    waited=$((waited + 1))
  done
  pg_ctl -D "$PGDATA" -m fast -w stop
  echo "PostgreSQL init process complete; ready for start up."
fi
if [ "${1:-postgres}" = postgres ]; then
  shift 2>/dev/null || true
  exec postgres -D "$PGDATA" "$@"
fi
exec "$@"
