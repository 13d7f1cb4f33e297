#!/usr/bin/env bash
# Runs the whole test suite: unit, integration (against real PostgreSQL,
# MariaDB, Redis and a loopback HTTP server) and doc tests, every feature.
#
# On a fresh Debian-like machine with Rust it installs and starts what is
# missing (as root, or through sudo): the Debian packages postgresql,
# mariadb-server and redis-server (and their clients). It then logs in with
# the exact URLs the tests use and, for the default local servers only,
# repairs what a test server needs: PostgreSQL trusts loopback connections
# (pg_hba.conf, reloaded), MariaDB's root@localhost takes an empty password
# over TCP (socket login kept), database `test` exists. Point the tests at
# other servers with FAPILOG_TEST_PG_URL, FAPILOG_TEST_MYSQL_URL and
# FAPILOG_TEST_REDIS_URL; servers at such URLs are never started or changed,
# and an unreachable one fails the tests with a message saying so. No test
# is ever skipped for want of a server.
set -euo pipefail
cd "$(dirname "$0")/.."

export FAPILOG_TEST_PG_URL="${FAPILOG_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
export FAPILOG_TEST_MYSQL_URL="${FAPILOG_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"
export FAPILOG_TEST_REDIS_URL="${FAPILOG_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
DEFAULT_PG=postgres://postgres@127.0.0.1:5432/test
DEFAULT_MYSQL=mysql://root@127.0.0.1:3306/test
DEFAULT_REDIS=redis://127.0.0.1:6379

say() { printf 'test.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 60); do
    port_open "$1" "$2" && return 0
    sleep 0.5
  done
  return 1
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else SUDO=none; fi
fi

as_root() {
  [ "$SUDO" = none ] && die "need root (or sudo) to run: $*"
  $SUDO "$@"
}

APT_UPDATED=""
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "cannot install $* (no apt-get): install it yourself and start it"
  if [ -z "$APT_UPDATED" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Every check below tries the exact URL the tests use. When it fails on a
# server of the default URLs, the script repairs what the tests need and
# checks again, so a rerun also repairs a machine set up wrongly before.

pg_ok() { psql "$FAPILOG_TEST_PG_URL" -Atqc "SELECT 1" >/dev/null 2>&1; }

ensure_postgres() {
  if [ "$FAPILOG_TEST_PG_URL" != "$DEFAULT_PG" ]; then
    command -v psql >/dev/null 2>&1 && ! pg_ok \
      && die "PostgreSQL at FAPILOG_TEST_PG_URL does not answer; start it or fix the URL"
    return 0
  fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1 && ! port_open 127.0.0.1 5432; then
    say "installing PostgreSQL"; apt_install postgresql
  fi
  command -v psql >/dev/null 2>&1 || { say "installing the PostgreSQL client"; apt_install postgresql-client; }
  local ver=""
  if ls /etc/postgresql/*/main >/dev/null 2>&1; then
    ver=$(ls /etc/postgresql | sort -V | tail -n 1)
  fi
  if ! port_open 127.0.0.1 5432; then
    [ -n "$ver" ] || die "PostgreSQL is not listening on 127.0.0.1:5432 and no cluster was found; start it and rerun"
    say "starting PostgreSQL $ver"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    wait_port 127.0.0.1 5432 || die "PostgreSQL did not start; start it and rerun"
  fi
  local admin="postgres://postgres@127.0.0.1:5432/postgres"
  if ! psql "$admin" -Atqc "SELECT 1" >/dev/null 2>&1; then
    [ -n "$ver" ] || die "cannot log in to PostgreSQL as postgres over 127.0.0.1 without a password; allow it (trust) or set FAPILOG_TEST_PG_URL"
    # A test server: trust connections from loopback, then reload so the
    # running cluster takes the change.
    say "PostgreSQL: trusting loopback connections (test setting)"
    as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' \
      "/etc/postgresql/$ver/main/pg_hba.conf"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
    for _ in $(seq 1 20); do
      psql "$admin" -Atqc "SELECT 1" >/dev/null 2>&1 && break
      sleep 0.5
    done
  fi
  psql "$admin" -Atqc "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null | grep -q 1 \
    || psql "$admin" -qc "CREATE DATABASE test" >/dev/null 2>&1 || true
  pg_ok || die "PostgreSQL does not accept $FAPILOG_TEST_PG_URL (is loopback auth 'trust' for user postgres, and does database test exist?)"
}

mysql_tcp() { mariadb --protocol=TCP -h 127.0.0.1 -P 3306 -u root -N -e "$1" 2>/dev/null; }

ensure_mariadb() {
  [ "$FAPILOG_TEST_MYSQL_URL" = "$DEFAULT_MYSQL" ] || return 0
  if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ] && ! port_open 127.0.0.1 3306; then
    say "installing MariaDB"; apt_install mariadb-server
  fi
  command -v mariadb >/dev/null 2>&1 || { say "installing the MariaDB client"; apt_install mariadb-client; }
  if ! port_open 127.0.0.1 3306; then
    say "starting MariaDB"
    as_root mkdir -p /run/mysqld
    as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
    wait_port 127.0.0.1 3306 || die "MariaDB did not start; start it and rerun"
    sleep 1
  fi
  # The tests log in as root with no password over TCP. Debian's MariaDB
  # maps 127.0.0.1 to root@localhost, whose default is unix_socket (useless
  # over TCP) or an unusable password; and with unix_socket listed first
  # the server asks for an auth switch that sqlx refuses. So, for a test
  # server: password login (empty) first, socket login kept second.
  local who; who=$(mysql_tcp "SELECT CURRENT_USER()" || true)
  local account=""
  if [ "$who" = "root@localhost" ] || [ -z "$who" ]; then
    account=$(as_root mariadb -N -e "SHOW CREATE USER root@localhost" 2>/dev/null || true)
  fi
  if [ -z "$who" ] || { [ "$who" = "root@localhost" ] && ! printf '%s' "$account" | grep -q "VIA mysql_native_password USING '' OR unix_socket"; }; then
    if [ -z "$who" ] && printf '%s' "$account" | grep -Eq "PASSWORD '\*[0-9A-F]{40}'|USING '\*[0-9A-F]{40}'"; then
      die "MariaDB's root@localhost has a password, so the tests cannot log in as root over TCP; set FAPILOG_TEST_MYSQL_URL to an account they can use"
    fi
    say "MariaDB: root@localhost logs in with an empty password first, unix_socket second (test setting)"
    as_root mariadb -e "ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket" \
      || die "could not set MariaDB's root@localhost for the tests; set FAPILOG_TEST_MYSQL_URL instead"
  fi
  mysql_tcp "CREATE DATABASE IF NOT EXISTS test" >/dev/null \
    || die "MariaDB does not accept root over 127.0.0.1 without a password (or cannot create database test)"
}

ensure_redis() {
  # Some tests run a private redis-server they can stop and restart, so the
  # binary is needed whatever FAPILOG_TEST_REDIS_URL says.
  command -v redis-server >/dev/null 2>&1 || { say "installing Redis"; apt_install redis-server; }
  if [ "$FAPILOG_TEST_REDIS_URL" != "$DEFAULT_REDIS" ]; then
    return 0
  fi
  if ! port_open 127.0.0.1 6379; then
    say "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    wait_port 127.0.0.1 6379 || die "Redis did not start; start it and rerun"
  fi
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(redis-cli -h 127.0.0.1 -p 6379 PING 2>/dev/null)" = "PONG" ] \
      || die "Redis on 127.0.0.1:6379 does not answer PING (does it need a password? set FAPILOG_TEST_REDIS_URL)"
  fi
}

ensure_postgres
ensure_mariadb
ensure_redis

# Every feature must build on its own, not only all together.
for feature in "" sqlite postgres mysql http redis opentelemetry tower; do
  cargo check --quiet --lib --features "$feature"
done
# Benchmarks are run with `cargo bench` (see BENCHMARKS.md); here they are
# only type-checked, so a broken bench still fails the suite.
cargo check --all-features --benches
cargo test --all-features --lib --bins --tests --examples
cargo test --all-features --doc
