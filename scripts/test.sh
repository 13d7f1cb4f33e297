#!/usr/bin/env bash
# Runs the whole test suite: unit, integration (against real PostgreSQL,
# MariaDB, Redis and a loopback HTTP server) and doc tests, every feature.
#
# On a fresh Debian-like machine with Rust it installs and starts what is
# missing (as root, or through sudo). Point the tests at other servers with
# FAPILOG_TEST_PG_URL, FAPILOG_TEST_MYSQL_URL and FAPILOG_TEST_REDIS_URL;
# servers at such URLs are never started or changed, and an unreachable one
# fails the run with a message saying so. No test is ever skipped for want
# of a server.
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

ensure_postgres() {
  port_open 127.0.0.1 5432 && return 0
  [ "$FAPILOG_TEST_PG_URL" = "$DEFAULT_PG" ] || die "PostgreSQL at FAPILOG_TEST_PG_URL is unreachable; start it"
  local fresh=""
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    say "installing PostgreSQL"; apt_install postgresql; fresh=1
  fi
  local ver; ver=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ -n "$fresh" ]; then
    # A test server of our own making: trust loopback connections.
    as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' \
      "/etc/postgresql/$ver/main/pg_hba.conf"
  fi
  say "starting PostgreSQL $ver"
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  wait_port 127.0.0.1 5432 || die "PostgreSQL did not start; start it and rerun"
  if command -v psql >/dev/null 2>&1; then
    psql "postgres://postgres@127.0.0.1:5432/postgres" -Atc "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null | grep -q 1 \
      || psql "postgres://postgres@127.0.0.1:5432/postgres" -qc "CREATE DATABASE test" \
      || die "could not create database test on PostgreSQL (is loopback auth 'trust' for user postgres?)"
  fi
}

ensure_mariadb() {
  port_open 127.0.0.1 3306 && return 0
  [ "$FAPILOG_TEST_MYSQL_URL" = "$DEFAULT_MYSQL" ] || die "MySQL/MariaDB at FAPILOG_TEST_MYSQL_URL is unreachable; start it"
  local fresh=""
  if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    say "installing MariaDB"; apt_install mariadb-server; fresh=1
  fi
  say "starting MariaDB"
  as_root mkdir -p /run/mysqld
  as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  wait_port 127.0.0.1 3306 || die "MariaDB did not start; start it and rerun"
  sleep 1
  if [ -n "$fresh" ]; then
    # A test server of our own making: root over TCP with no password.
    as_root mariadb -e "ALTER USER root@localhost IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('')" || true
  fi
  as_root mariadb -e "CREATE DATABASE IF NOT EXISTS test" \
    || die "could not create database test on MariaDB"
}

ensure_redis() {
  command -v redis-server >/dev/null 2>&1 || { say "installing Redis"; apt_install redis-server; }
  port_open 127.0.0.1 6379 && return 0
  [ "$FAPILOG_TEST_REDIS_URL" = "$DEFAULT_REDIS" ] || die "Redis at FAPILOG_TEST_REDIS_URL is unreachable; start it"
  say "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  wait_port 127.0.0.1 6379 || die "Redis did not start; start it and rerun"
}

ensure_postgres
ensure_mariadb
ensure_redis

# Every feature must build on its own, not only all together.
for feature in "" sqlite postgres mysql http redis; do
  cargo check --quiet --lib --features "$feature"
done
# Benchmarks are run with `cargo bench` (see BENCHMARKS.md); here they are
# only type-checked, so a broken bench still fails the suite.
cargo check --all-features --benches
cargo test --all-features --lib --bins --tests --examples
cargo test --all-features --doc
