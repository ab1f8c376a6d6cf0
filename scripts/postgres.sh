#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and CI.
#
#   scripts/postgres.sh start     start it (initdb the first time); prints its URL on stdout
#   scripts/postgres.sh url       prints the URL of the running cluster (exit 1 when it is not running)
#   scripts/postgres.sh env       start, then print `export OFFPEAK_TEST_PG_URL=…` for eval
#   scripts/postgres.sh status    exit 0 when running
#   scripts/postgres.sh stop      stop it (the data stays for a fast warm start)
#   scripts/postgres.sh destroy   stop it and delete its folder
#
# Installs Debian's `postgresql` package (apt-get) when no server binaries are found under
# /usr/lib/postgresql/<version>/bin. The cluster is tuned for tests and nothing else: fsync,
# synchronous_commit and full_page_writes off, listening on 127.0.0.1 only, trust auth.
# PostgreSQL refuses to run as root: as root the server runs as the `postgres` user.
#
# Environment:
#   OFFPEAK_PG_DIR   the cluster's folder (default /var/tmp/offpeak-pg; not under /root)
#   OFFPEAK_PG_PORT  the preferred port (default 54329; the next free one is taken when busy)
#   OFFPEAK_PG_BIN   a folder holding initdb and pg_ctl (default: the newest /usr/lib/postgresql/*/bin)
#
# Only the URL (or the export line) goes to stdout; messages go to stderr.
set -euo pipefail

DIR="$(realpath -m "${OFFPEAK_PG_DIR:-/var/tmp/offpeak-pg}")"
DATA="$DIR/data"
LOG="$DIR/server.log"
PORT_FILE="$DIR/port"
PREFERRED_PORT="${OFFPEAK_PG_PORT:-54329}"

say() { echo "postgres.sh: $*" >&2; }
die() { say "$*"; exit 1; }

is_root() { [ "$(id -u)" = "0" ]; }

# runs a command as the cluster's owner (postgres when we are root)
as_owner() {
  if is_root; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u postgres -- "$@"
    else
      su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

find_bin() {
  if [ -n "${OFFPEAK_PG_BIN:-}" ]; then
    [ -x "$OFFPEAK_PG_BIN/pg_ctl" ] && [ -x "$OFFPEAK_PG_BIN/initdb" ] && { echo "$OFFPEAK_PG_BIN"; return 0; }
    die "OFFPEAK_PG_BIN=$OFFPEAK_PG_BIN holds no pg_ctl/initdb"
  fi
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/initdb" ]; then
    echo "$dir"
    return 0
  fi
  return 1
}

install_postgres() {
  is_root || die "PostgreSQL is not installed and installing it needs root: apt-get install -y --no-install-recommends postgresql"
  command -v apt-get >/dev/null 2>&1 || die "PostgreSQL is not installed and there is no apt-get"
  say "installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  # no system-wide cluster on 5432 started by the package: this script makes its own
  mkdir -p /etc/postgresql-common/createcluster.d
  [ -e /etc/postgresql-common/createcluster.d/offpeak.conf ] ||
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/offpeak.conf
  if ! apt-get install -y --no-install-recommends postgresql >&2; then
    apt-get update >&2
    apt-get install -y --no-install-recommends postgresql >&2
  fi
}

BIN=""
ensure_bin() {
  [ -n "$BIN" ] && return 0
  if ! BIN="$(find_bin)"; then
    install_postgres
    BIN="$(find_bin)" || die "no initdb/pg_ctl under /usr/lib/postgresql/*/bin after installing postgresql"
  fi
}

running() {
  [ -f "$DATA/PG_VERSION" ] || return 1
  ensure_bin
  as_owner "$BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

# the port of the running server (line 4 of postmaster.pid), else the port file
current_port() {
  local port=""
  if [ -r "$DATA/postmaster.pid" ]; then port="$(sed -n 4p "$DATA/postmaster.pid" 2>/dev/null || true)"; fi
  if [ -z "$port" ] && [ -r "$PORT_FILE" ]; then port="$(cat "$PORT_FILE")"; fi
  echo "$port"
}

url() { echo "postgres://postgres@127.0.0.1:$1/postgres"; }

# true when something accepts TCP connections on 127.0.0.1:$1
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

init_cluster() {
  case "$DIR/" in
    /root/*) die "OFFPEAK_PG_DIR=$DIR is under /root, which the postgres user cannot enter: use e.g. /var/tmp/offpeak-pg" ;;
  esac
  mkdir -p "$DIR"
  if is_root; then chown postgres: "$DIR"; fi
  chmod 700 "$DIR"
  local version major
  version="$("$BIN/pg_ctl" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)?.*/\1/')"
  if [ -f "$DATA/PG_VERSION" ]; then
    major="$(cat "$DATA/PG_VERSION")"
    if [ "$major" = "$version" ]; then return 0; fi
    say "the cluster in $DATA is PostgreSQL $major, the binaries are $version: creating it again"
    rm -rf "$DATA"
  fi
  say "initdb $DATA (PostgreSQL $version)"
  as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --no-locale --no-sync >/dev/null
  cat >>"$DATA/postgresql.conf" <<EOF

# offpeak test cluster: durability off, local only
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
log_min_messages = warning
EOF
}

start() {
  ensure_bin
  if running; then
    url "$(current_port)"
    return 0
  fi
  init_cluster
  local port="$PREFERRED_PORT" tries=0
  if [ -r "$PORT_FILE" ] && [ -z "${OFFPEAK_PG_PORT:-}" ]; then port="$(cat "$PORT_FILE")"; fi
  while :; do
    tries=$((tries + 1))
    [ "$tries" -le 50 ] || die "no free port from $PREFERRED_PORT on"
    if port_taken "$port"; then
      port=$((port + 1))
      continue
    fi
    if as_owner "$BIN/pg_ctl" start -D "$DATA" -l "$LOG" -w -t 60 -o "-p $port" >/dev/null 2>&1; then
      break
    fi
    if grep -q "could not create any TCP/IP sockets\|could not bind" "$LOG" 2>/dev/null; then
      say "port $port is taken, trying $((port + 1))"
      : | as_owner tee "$LOG" >/dev/null
      port=$((port + 1))
      continue
    fi
    tail -n 20 "$LOG" >&2 || true
    die "pg_ctl start failed (log: $LOG)"
  done
  echo "$port" | as_owner tee "$PORT_FILE" >/dev/null
  say "started on 127.0.0.1:$port (data: $DATA)"
  url "$port"
}

stop() {
  if running; then
    as_owner "$BIN/pg_ctl" stop -D "$DATA" -m fast -w >/dev/null
    say "stopped"
  fi
}

case "${1:-}" in
  start) start ;;
  url)
    running || die "not running (scripts/postgres.sh start)"
    url "$(current_port)"
    ;;
  env)
    u="$(start)"
    echo "export OFFPEAK_TEST_PG_URL=$u"
    ;;
  status)
    if running; then say "running: $(url "$(current_port)")"; else say "not running"; exit 1; fi
    ;;
  stop) stop ;;
  destroy)
    stop
    rm -rf "$DIR"
    say "removed $DIR"
    ;;
  *)
    echo "usage: scripts/postgres.sh start|url|env|status|stop|destroy" >&2
    exit 2
    ;;
esac
