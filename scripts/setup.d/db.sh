#!/usr/bin/env bash
# What the database tests (tests/db_*.rs) need, installed when missing:
# - pg_dump/pg_restore/dropdb of the same major version as the tests' server
#   (MAILY_TEST_POSTGRES_URL, from services.sh; an older pg_dump refuses a
#   newer server): Debian's postgresql-client-<major>;
# - initdb/pg_ctl of that version, for the private password-auth cluster of
#   tests/e2e/db_connect.rs: Debian's postgresql-<major>;
# - moto's S3-compatible server (`moto_server`) from PyPI, for s3:// backups.
# Idempotent: a second run installs nothing.
set -euo pipefail

log() { printf '   db: %s\n' "$*"; }
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

server=${MAILY_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
server_num=$(psql -w -X -d "$server/postgres" -Atc 'SHOW server_version_num' 2>/dev/null || true)
if [ -z "$server_num" ]; then
  echo "error: no PostgreSQL answers at $server as user postgres; the db tests need it (scripts/setup.d/services.sh starts one)" >&2
  exit 1
fi
major=$((server_num / 10000))

dump_major() { pg_dump --version 2>/dev/null | sed -E 's/.* ([0-9]+)(\.[0-9]+)+.*/\1/'; }
if ! command -v pg_dump >/dev/null || [ "$(dump_major)" -lt "$major" ]; then
  log "installing postgresql-client-$major (pg_dump must be at least the server's major version $major)"
  apt_install "postgresql-client-$major"
fi
if [ "$(dump_major)" -lt "$major" ]; then
  echo "error: pg_dump is version $(dump_major) but the server is $major" >&2
  exit 1
fi
if [ ! -x "/usr/lib/postgresql/$major/bin/initdb" ]; then
  log "installing postgresql-$major (initdb for the password-auth test cluster)"
  apt_install "postgresql-$major"
fi
command -v runuser >/dev/null || apt_install util-linux

if ! command -v moto_server >/dev/null; then
  log "installing moto[server] from PyPI"
  python3 -m pip install --quiet 'moto[server]'
  # Under pyenv a new console script needs its shim.
  if command -v pyenv >/dev/null; then pyenv rehash; fi
  hash -r
fi
command -v moto_server >/dev/null || { echo "error: moto_server is not on PATH after installing moto[server]" >&2; exit 1; }
log "pg_dump $(dump_major) for server $major; $(command -v moto_server)"
