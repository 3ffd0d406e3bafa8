#!/usr/bin/env bash
# The servers the tests talk to, on loopback: PostgreSQL, Redis, RabbitMQ.
#
# For each: if something already answers on its port, it is left exactly as
# it is; otherwise the package is installed from Debian's archive when
# missing, and the server is started on loopback and waited for (60 s at
# most; on failure the run stops naming it, with the last lines of its log).
#
# PostgreSQL: the tests log in as `postgres` without a password. A server on
# 127.0.0.1:5432 that allows that is used as it is. Otherwise (nothing there,
# or a cluster that asks for a password, as Debian's does on 127.0.0.1) the
# tests get a private instance of their own, on its own port
# (MAILY_TEST_PG_PORT, default 55432) and data directory, with trust
# authentication on 127.0.0.1 only. The machine's own cluster and its
# authentication are never touched.
#
# Writes what the tests need to know to $MAILY_CACHE/test-services.env
# (MAILY_TEST_POSTGRES_URL), which scripts/test sources.
#
# Idempotent: a second run finds everything answering and changes nothing.
set -euo pipefail

cache=${MAILY_CACHE:-$HOME/.cache/maily-deploy}
state=$cache/services
mkdir -p "$state"
env_file=$cache/test-services.env
wait_seconds=60

log() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null || die "$* missing and this machine has no apt-get: install $* yourself"
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  log "installing $* from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# wait_up NAME PORT LOG [CHECK...]: until PORT answers (and CHECK passes), or
# fail naming NAME with the end of LOG.
wait_up() {
  local name=$1 port=$2 logfile=$3; shift 3
  local deadline=$((SECONDS + wait_seconds))
  while [ $SECONDS -lt $deadline ]; do
    if listening "$port" && { [ $# -eq 0 ] || "$@" >/dev/null 2>&1; }; then
      log "started $name on 127.0.0.1:$port"
      return 0
    fi
    sleep 1
  done
  {
    printf 'error: %s did not come up on 127.0.0.1:%s within %s s\n' "$name" "$port" "$wait_seconds"
    printf 'last lines of %s:\n' "$logfile"
    tail -n 30 "$logfile" 2>/dev/null | sed 's/^/  /' || echo "  (no log)"
  } >&2
  exit 1
}

# --- PostgreSQL -------------------------------------------------------------

command -v psql >/dev/null || apt_install postgresql-client
trusted() { psql -w -X -q -At -d "postgres://postgres@127.0.0.1:$1/postgres?sslmode=disable" -c 'SELECT 1' >/dev/null 2>&1; }

if trusted 5432; then
  pg_port=5432
  log "PostgreSQL already answers on 127.0.0.1:5432 and trusts user postgres; left as it is"
else
  pg_port=${MAILY_TEST_PG_PORT:-55432}
  if listening 5432; then
    log "PostgreSQL on 127.0.0.1:5432 asks for a password; the tests use a private instance on 127.0.0.1:$pg_port"
  fi
  if trusted "$pg_port"; then
    log "the tests' PostgreSQL already answers on 127.0.0.1:$pg_port; left as it is"
  else
    listening "$pg_port" && die "127.0.0.1:$pg_port is taken by something that is not a trusting PostgreSQL; set MAILY_TEST_PG_PORT to a free port"
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
      apt_install postgresql
      pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    major=$(basename "$(dirname "$pg_bin")")
    # initdb refuses root: as root the instance belongs to the `postgres`
    # user the package created, in its home; otherwise to the caller.
    if [ "$(id -u)" = 0 ]; then
      data=/var/lib/postgresql/maily-deploy-test/$major
      as_owner() { runuser -u postgres -- "$@"; }
      mkdir -p "$data" && chown -R postgres: "$(dirname "$data")"
    else
      data=$state/postgresql-$major
      as_owner() { "$@"; }
      mkdir -p "$data"
    fi
    chmod 700 "$data"
    if [ ! -s "$data/PG_VERSION" ]; then
      log "initialising the tests' PostgreSQL $major in $data (trust on 127.0.0.1 only)"
      as_owner "$pg_bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$state/initdb.log" 2>&1 \
        || { tail -n 20 "$state/initdb.log" >&2; die "initdb of the tests' PostgreSQL failed"; }
    fi
    # A test server: durability off for speed, many parallel test databases.
    as_owner "$pg_bin/pg_ctl" -D "$data" -l "$data/server.log" -W start -o \
      "-c listen_addresses=127.0.0.1 -p $pg_port -k $data -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
      >/dev/null || true
    wait_up "PostgreSQL $major (the tests' own, $data)" "$pg_port" "$data/server.log" trusted "$pg_port"
  fi
fi

# --- Redis ------------------------------------------------------------------

if listening 6379; then
  log "Redis already answers on 127.0.0.1:6379; left as it is"
else
  command -v redis-server >/dev/null || apt_install redis-server
  if ! listening 6379; then
    # Nothing persisted: the tests use key prefixes of their own.
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --protected-mode yes \
      --save "" --appendonly no --dir "$state" --logfile "$state/redis.log" --pidfile "$state/redis.pid" \
      || true
    wait_up Redis 6379 "$state/redis.log"
  fi
fi

# --- RabbitMQ ---------------------------------------------------------------

if listening 5672; then
  log "RabbitMQ already answers on 127.0.0.1:5672; left as it is"
else
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  if ! listening 5672; then
    # Loopback only: AMQP, Erlang distribution and epmd. `guest` keeps
    # RabbitMQ's default of logging in from loopback only.
    (
      cd /tmp
      export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1
      export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
      rabbitmq-server -detached >"$state/rabbitmq-start.log" 2>&1 || cat "$state/rabbitmq-start.log" >&2
    )
    wait_up RabbitMQ 5672 "/var/log/rabbitmq/rabbit@$(hostname -s).log"
  fi
fi

# A user whose password holds what a URL must percent-encode ('@', '/',
# ':', '#'): tests/e2e/verify.rs logs in with it through RABBITMQ_URL.
if command -v rabbitmqctl >/dev/null; then
  (
    cd /tmp
    rabbitmqctl -q add_user maily-encoded 'p@ss/w:rd#1' >/dev/null 2>&1 ||
      rabbitmqctl -q change_password maily-encoded 'p@ss/w:rd#1' >/dev/null
    rabbitmqctl -q set_permissions -p / maily-encoded '.*' '.*' '.*' >/dev/null
  ) || printf 'warning: %s\n' "could not give RabbitMQ the user maily-encoded (rabbitmqctl failed); the test that logs in with it will fail" >&2
fi

printf 'MAILY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:%s\n' "$pg_port" >"$env_file"
log "the tests' services: $(cat "$env_file") (in $env_file)"
