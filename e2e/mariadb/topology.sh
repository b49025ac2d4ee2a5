#!/usr/bin/env bash
# Local MariaDB primary/replica topology for ghost end-to-end tests.
#
# Usage: e2e/mariadb/topology.sh {start|stop|reset|status|env}
#
#   start   start primary + replica (idempotent), set up GTID replication and
#           the test users on first start, restart stopped slave threads
#   stop    stop both servers (SIGTERM to the pid in each pid file)
#   reset   stop, delete all state, start a fresh topology
#   status  show server/replication state; exit 0 only if both servers are up
#           and the replica's IO and SQL threads are running
#   env     print `export` lines for the test harness:
#             eval "$(e2e/mariadb/topology.sh env)"
#
# Environment (defaults in brackets):
#   GHOST_MARIADB_DIR          state dir [$HOME/.cache/ghost/mariadb]
#   GHOST_PRIMARY_PORT         primary TCP port [23306]
#   GHOST_REPLICA_PORT         replica TCP port [23307]
#   GHOST_TEST_PASSWORD        password of 'ghost'@'127.0.0.1' [ghost-pass]
#   GHOST_TEST_ADMIN_PASSWORD  password of 'ghost_admin'@'127.0.0.1' [ghost-admin-pass]
#
# Servers listen on 127.0.0.1 only; root logs in through the unix socket
# (unix_socket auth, OS user root). Every client call uses --no-defaults, and
# so does every server: /etc/mysql is never read.
set -euo pipefail

# mariadbd lives in /usr/sbin, which is not always on PATH.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

BASE_DIR="${GHOST_MARIADB_DIR:-${HOME:-/root}/.cache/ghost/mariadb}"
PRIMARY_PORT="${GHOST_PRIMARY_PORT:-23306}"
REPLICA_PORT="${GHOST_REPLICA_PORT:-23307}"
HOST=127.0.0.1

GHOST_USER=ghost
GHOST_PASSWORD="${GHOST_TEST_PASSWORD:-ghost-pass}"
ADMIN_USER=ghost_admin
ADMIN_PASSWORD="${GHOST_TEST_ADMIN_PASSWORD:-ghost-admin-pass}"
REPL_USER=repl
REPL_PASSWORD=repl-pass

# Privileges of the 'ghost' user. All of these exist in MariaDB 10.11
# (SLAVE MONITOR is an alias of REPLICA MONITOR there).
GHOST_GRANTS="SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, LOCK TABLES, TRIGGER, EVENT, PROCESS, RELOAD, REPLICATION SLAVE, BINLOG MONITOR, REPLICA MONITOR, REPLICATION SLAVE ADMIN, SLAVE MONITOR, REPLICATION MASTER ADMIN, BINLOG ADMIN"

START_TIMEOUT=30
STOP_TIMEOUT=30
REPL_TIMEOUT=30

log() { printf 'mariadb: %s\n' "$*"; }
die() {
  printf 'mariadb: ERROR: %s\n' "$*" >&2
  exit 1
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }
elapsed() { # elapsed <start_ms> -> "1.8s"
  local ms=$(($(now_ms) - $1))
  printf '%d.%ds' $((ms / 1000)) $(((ms % 1000) / 100))
}

role_dir() { echo "$BASE_DIR/$1"; }
datadir_of() { echo "$BASE_DIR/$1/data"; }
sock_of() { echo "$BASE_DIR/$1/mysqld.sock"; }
pidfile_of() { echo "$BASE_DIR/$1/mysqld.pid"; }
errlog_of() { echo "$BASE_DIR/$1/error.log"; }
port_of() {
  if [[ $1 == primary ]]; then echo "$PRIMARY_PORT"; else echo "$REPLICA_PORT"; fi
}

# SQL string literal body: escape backslashes and single quotes.
sql_str() {
  local s=${1//\\/\\\\}
  printf '%s' "${s//\'/\'\'}"
}

# client <role> [mariadb args...]: root over the unix socket.
client() {
  local role=$1
  shift
  mariadb --no-defaults -S "$(sock_of "$role")" -uroot "$@"
}

# sql <role> <statements>: batch mode, no column names.
sql() { client "$1" -N -B -e "$2"; }

# tcp_login_ok <port> <user> <password>
tcp_login_ok() {
  MYSQL_PWD="$3" mariadb --no-defaults -h"$HOST" -P"$1" -u"$2" -N -B -e 'SELECT 1' >/dev/null 2>&1
}

ensure_mariadb() {
  if command -v mariadbd >/dev/null && command -v mariadb >/dev/null &&
    command -v mariadb-install-db >/dev/null; then
    return 0
  fi
  log "mariadbd/mariadb/mariadb-install-db not found; installing mariadb-server via apt-get"
  [[ $(id -u) -eq 0 ]] || die "need root to apt-get install mariadb-server"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y mariadb-server mariadb-client
  command -v mariadbd >/dev/null || die "mariadbd still not found after installing mariadb-server"
}

# server_pid <role>: print the pid from the pid file if it names a live
# mariadbd process; return 1 otherwise.
server_pid() {
  local pidfile pid comm
  pidfile=$(pidfile_of "$1")
  [[ -s $pidfile ]] || return 1
  pid=$(tr -dc '0-9' <"$pidfile")
  [[ -n $pid ]] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [[ $comm == mariadbd || $comm == mysqld ]] || return 1
  echo "$pid"
}

answers() { client "$1" -N -B -e 'SELECT 1' >/dev/null 2>&1; }

# server_up <role>: live pid and answering on the socket.
server_up() { server_pid "$1" >/dev/null && answers "$1"; }

show_error_log() {
  local errlog
  errlog=$(errlog_of "$1")
  if [[ -f $errlog ]]; then
    echo "---- last 30 lines of $errlog ----" >&2
    tail -n 30 "$errlog" >&2
    echo "----" >&2
  else
    echo "(no $errlog)" >&2
  fi
}

# wait_ready <role> <pid> <start_ms>
wait_ready() {
  local role=$1 pid=$2 t0=$3 deadline
  deadline=$(($(now_ms) + START_TIMEOUT * 1000))
  while (($(now_ms) < deadline)); do
    if answers "$role"; then
      log "$role up on $HOST:$(port_of "$role") ($(elapsed "$t0"))"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "mariadb: ERROR: $role mariadbd (pid $pid) exited during startup" >&2
      show_error_log "$role"
      exit 1
    fi
    sleep 0.2
  done
  echo "mariadb: ERROR: $role not ready on $(sock_of "$role") after ${START_TIMEOUT}s" >&2
  show_error_log "$role"
  exit 1
}

init_datadir() {
  local role=$1 datadir installlog t0
  datadir=$(datadir_of "$role")
  installlog="$(role_dir "$role")/install-db.log"
  [[ -d $datadir/mysql ]] && return 0
  t0=$(now_ms)
  mkdir -p "$datadir"
  if ! mariadb-install-db --no-defaults --datadir="$datadir" --user=root \
    --auth-root-authentication-method=socket --skip-test-db >"$installlog" 2>&1; then
    echo "mariadb: ERROR: mariadb-install-db failed for $role; last lines of $installlog:" >&2
    tail -n 30 "$installlog" >&2
    exit 1
  fi
  log "$role datadir initialised in $datadir ($(elapsed "$t0"))"
}

start_server() {
  local role=$1 dir datadir pid t0
  local -a args
  dir=$(role_dir "$role")
  datadir=$(datadir_of "$role")

  if pid=$(server_pid "$role"); then
    if answers "$role"; then
      log "$role already up on $HOST:$(port_of "$role") (pid $pid)"
      return 0
    fi
    # Live process that does not answer yet: probably still starting.
    log "$role process $pid is running but not answering yet; waiting"
    wait_ready "$role" "$pid" "$(now_ms)"
    return 0
  fi

  mkdir -p "$dir"
  init_datadir "$role"
  rm -f "$(pidfile_of "$role")"

  args=(
    --no-defaults
    --datadir="$datadir"
    --socket="$(sock_of "$role")"
    --port="$(port_of "$role")"
    --bind-address="$HOST"
    --user=root
    --pid-file="$(pidfile_of "$role")"
    --log-error="$(errlog_of "$role")"
    --log-bin="$datadir/mariadb-bin"
    --binlog-format=ROW
    --binlog-row-image=FULL
    --log-slave-updates=ON
    --innodb-buffer-pool-size=128M
    --innodb-log-file-size=16M
    --max-allowed-packet=64M
    --skip-name-resolve
    --character-set-server=utf8mb4
    --collation-server=utf8mb4_general_ci
    --performance-schema=OFF
    --log-bin-trust-function-creators=ON
  )
  if [[ $role == primary ]]; then
    args+=(--server-id=1 --event-scheduler=ON)
  else
    args+=(--server-id=2 --relay-log="$datadir/relay-bin")
  fi

  t0=$(now_ms)
  # New session, no controlling terminal, stdio detached: outlives this script
  # and does not keep a caller's pipes open.
  setsid nohup mariadbd "${args[@]}" </dev/null >>"$dir/stdout.log" 2>&1 &
  pid=$!
  wait_ready "$role" "$pid" "$t0"
}

stop_server() {
  local role=$1 pid deadline t0
  if ! pid=$(server_pid "$role"); then
    rm -f "$(pidfile_of "$role")"
    log "$role not running"
    return 0
  fi
  t0=$(now_ms)
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(($(now_ms) + STOP_TIMEOUT * 1000))
  while kill -0 "$pid" 2>/dev/null; do
    if (($(now_ms) >= deadline)); then
      echo "mariadb: WARNING: $role (pid $pid) did not exit within ${STOP_TIMEOUT}s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      break
    fi
    sleep 0.2
  done
  rm -f "$(pidfile_of "$role")"
  log "$role stopped (pid $pid, $(elapsed "$t0"))"
}

slave_status() { client replica -e 'SHOW SLAVE STATUS\G'; }

# field <name> <status text>
field() { sed -n "s/^ *$1: //p" <<<"$2" | head -n 1; }

# Create the test database and users on the primary (they replicate).
# Idempotent; also resets passwords to the configured values.
ensure_users() {
  local gp ap
  gp=$(sql_str "$GHOST_PASSWORD")
  ap=$(sql_str "$ADMIN_PASSWORD")
  sql primary "
    CREATE DATABASE IF NOT EXISTS test;
    CREATE USER IF NOT EXISTS '$GHOST_USER'@'$HOST' IDENTIFIED BY '$gp';
    ALTER USER '$GHOST_USER'@'$HOST' IDENTIFIED BY '$gp';
    GRANT $GHOST_GRANTS ON *.* TO '$GHOST_USER'@'$HOST';
    CREATE USER IF NOT EXISTS '$ADMIN_USER'@'$HOST' IDENTIFIED BY '$ap';
    ALTER USER '$ADMIN_USER'@'$HOST' IDENTIFIED BY '$ap';
    GRANT ALL PRIVILEGES ON *.* TO '$ADMIN_USER'@'$HOST' WITH GRANT OPTION;"
}

# Wait until both slave threads run and the test users exist on the replica.
wait_replication() {
  local t0 deadline st io sqlt users
  t0=$(now_ms)
  deadline=$((t0 + REPL_TIMEOUT * 1000))
  while :; do
    st=$(slave_status 2>/dev/null || true)
    io=$(field Slave_IO_Running "$st")
    sqlt=$(field Slave_SQL_Running "$st")
    users=$(sql replica "SELECT COUNT(*) FROM mysql.user WHERE host='$HOST' AND user IN ('$GHOST_USER','$ADMIN_USER')" 2>/dev/null || echo 0)
    if [[ $io == Yes && $sqlt == Yes && $users == 2 ]]; then
      log "replication running: primary $HOST:$PRIMARY_PORT -> replica $HOST:$REPLICA_PORT ($(elapsed "$t0"))"
      return 0
    fi
    if (($(now_ms) >= deadline)); then
      {
        echo "mariadb: ERROR: replication not healthy after ${REPL_TIMEOUT}s" \
          "(Slave_IO_Running=${io:-?} Slave_SQL_Running=${sqlt:-?} test users on replica=${users}/2)"
        echo "---- SHOW SLAVE STATUS\\G on replica ----"
        echo "$st"
      } >&2
      exit 1
    fi
    sleep 0.3
  done
}

setup_replication() {
  log "setting up replication (one-time)"
  sql primary "
    SET sql_log_bin=0;
    CREATE USER IF NOT EXISTS '$REPL_USER'@'$HOST' IDENTIFIED BY '$(sql_str "$REPL_PASSWORD")';
    GRANT REPLICATION SLAVE ON *.* TO '$REPL_USER'@'$HOST';"
  sql replica "
    CHANGE MASTER TO MASTER_HOST='$HOST', MASTER_PORT=$PRIMARY_PORT,
      MASTER_USER='$REPL_USER', MASTER_PASSWORD='$(sql_str "$REPL_PASSWORD")',
      MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;
    START SLAVE;"
  ensure_users
  wait_replication
}

# Replication already configured: restart stopped slave threads and make sure
# the test users can log in with the configured passwords.
check_replication() {
  local st io sqlt need_wait=0
  st=$(slave_status)
  io=$(field Slave_IO_Running "$st")
  sqlt=$(field Slave_SQL_Running "$st")
  if [[ $io != Yes || $sqlt != Yes ]]; then
    log "replica slave threads not running (IO=$io SQL=$sqlt); START SLAVE"
    sql replica "START SLAVE"
    need_wait=1
  fi
  # Always (idempotent): a newer checkout may grant more than the cached data directory has.
  ensure_users
  if ! tcp_login_ok "$PRIMARY_PORT" "$GHOST_USER" "$GHOST_PASSWORD" ||
    ! tcp_login_ok "$PRIMARY_PORT" "$ADMIN_USER" "$ADMIN_PASSWORD"; then
    log "test users were missing or their passwords changed; recreated them on the primary"
    need_wait=1
  fi
  if ((need_wait)); then
    wait_replication
  else
    log "replication already running"
  fi
}

cmd_start() {
  ensure_mariadb
  mkdir -p "$BASE_DIR"
  start_server primary
  start_server replica
  local st
  st=$(slave_status) || die "SHOW SLAVE STATUS failed on the replica"
  if [[ -z $st ]]; then
    setup_replication
  else
    check_replication
  fi
}

cmd_stop() {
  # Replica first, so its IO thread does not spin reconnecting to a dead primary.
  stop_server replica
  stop_server primary
}

cmd_reset() {
  cmd_stop
  log "deleting $BASE_DIR/primary and $BASE_DIR/replica"
  rm -rf -- "$BASE_DIR/primary" "$BASE_DIR/replica"
  cmd_start
}

cmd_status() {
  local ok=0 role pid st io sqlt lag err
  for role in primary replica; do
    if pid=$(server_pid "$role") && answers "$role"; then
      echo "$role: up on $HOST:$(port_of "$role") (pid $pid, socket $(sock_of "$role"))"
    else
      echo "$role: DOWN (port $(port_of "$role"), dir $(role_dir "$role"))"
      ok=1
    fi
  done
  if server_up replica; then
    st=$(slave_status)
    if [[ -z $st ]]; then
      echo "replication: NOT CONFIGURED"
      ok=1
    else
      io=$(field Slave_IO_Running "$st")
      sqlt=$(field Slave_SQL_Running "$st")
      lag=$(field Seconds_Behind_Master "$st")
      echo "replication: Slave_IO_Running=$io Slave_SQL_Running=$sqlt Seconds_Behind_Master=$lag Gtid_IO_Pos=$(field Gtid_IO_Pos "$st")"
      err=$(field Last_IO_Error "$st")
      [[ -z $err ]] || echo "replication: Last_IO_Error: $err"
      err=$(field Last_SQL_Error "$st")
      [[ -z $err ]] || echo "replication: Last_SQL_Error: $err"
      [[ $io == Yes && $sqlt == Yes ]] || ok=1
    fi
  else
    echo "replication: unknown (replica down)"
  fi
  return "$ok"
}

cmd_env() {
  printf 'export %s=%q\n' \
    GHOST_TEST_PRIMARY "$HOST:$PRIMARY_PORT" \
    GHOST_TEST_REPLICA "$HOST:$REPLICA_PORT" \
    GHOST_TEST_USER "$GHOST_USER" \
    GHOST_TEST_PASSWORD "$GHOST_PASSWORD" \
    GHOST_TEST_ADMIN_USER "$ADMIN_USER" \
    GHOST_TEST_ADMIN_PASSWORD "$ADMIN_PASSWORD" \
    GHOST_PRIMARY_SOCKET "$(sock_of primary)" \
    GHOST_REPLICA_SOCKET "$(sock_of replica)"
}

usage() {
  echo "usage: $0 {start|stop|reset|status|env}" >&2
  exit 2
}

main() {
  [[ $# -eq 1 ]] || usage
  case $1 in
  start) cmd_start ;;
  stop) cmd_stop ;;
  reset) cmd_reset ;;
  status) cmd_status ;;
  env) cmd_env ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) usage ;;
  esac
}

main "$@"
