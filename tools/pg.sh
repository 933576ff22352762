#!/usr/bin/env bash
# Private local PostgreSQL cluster for `make run` / `make test` when DATABASE_URL is unset.
#   tools/pg.sh DATADIR PORT -- COMMAND...   start (creating on first use), run COMMAND with DATABASE_URL, stop
# The cluster lives in DATADIR (git-ignored) and is reused on the next run. It is durable (fsync on), as
# `make run` needs; PG_FSYNC=off (what `make test` uses, for speed) trades crash safety for speed.
set -euo pipefail
data=$1 port=$2
shift 2
[ "${1:-}" = "--" ] && shift

if [ -n "${DATABASE_URL:-}" ]; then
  exec "$@"
fi

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "pg.sh: installing Debian's postgresql package" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  else
    echo "pg.sh: PostgreSQL is not installed: apt-get install postgresql, or set DATABASE_URL" >&2
    exit 1
  fi
fi

mkdir -p "$data"
data=$(cd "$data" && pwd)
# initdb and postgres refuse to run as root: run them as the postgres user on a directory it owns.
as_owner=()
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$data"
  as_owner=(runuser -u postgres --)
  # The postgres user must reach the folder; a checkout under a private home directory does not allow it.
  if ! runuser -u postgres -- test -w "$data"; then
    fallback=/var/tmp/spe-pgdata-$(printf '%s' "$data" | sha256sum | cut -c1-12)
    echo "pg.sh: the postgres user cannot reach $data; using $fallback instead" >&2
    mkdir -p "$fallback" && chown postgres: "$fallback" && chmod 700 "$fallback"
    data=$fallback
  fi
fi
if [ ! -f "$data/PG_VERSION" ]; then
  "${as_owner[@]}" "$bin/initdb" -D "$data" -U spe --auth=trust -E UTF8 >/dev/null
fi
log="$data/server.log"
durability=""
if [ "${PG_FSYNC:-on}" = off ]; then
  durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
fi
"${as_owner[@]}" "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 \
  -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c max_connections=200 $durability" start >/dev/null \
  || { echo "pg.sh: PostgreSQL did not start (port $port in use?); log:" >&2; tail -n 20 "$log" >&2; exit 1; }
stop() { "${as_owner[@]}" "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true; }
trap stop EXIT INT TERM
"$bin/psql" -h 127.0.0.1 -p "$port" -U spe -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='spe'" | grep -q 1 \
  || "$bin/createdb" -h 127.0.0.1 -p "$port" -U spe spe
export DATABASE_URL="postgres://spe@127.0.0.1:$port/spe"
set +e
"$@"
status=$?
exit $status
