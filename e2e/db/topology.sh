#!/usr/bin/env bash
# Local database topologies for ghost end-to-end tests: a primary, a GTID replica of it, a
# standalone TLS-only server and a standalone lower_case_table_names=1 server, for one of
# several server flavours.
#
# Usage: e2e/db/topology.sh SERVER {start|stop|reset|status|env}
#        e2e/db/topology.sh SERVER restart ROLE [SECONDS]
#        e2e/db/topology.sh SERVER client [CLIENT ARGS...]
#
#   SERVER         roles' ports (primary/replica/tls/lctn1)  where the binaries come from
#   mariadb-10.11  23306/23307/23308/23309                   the host's Debian packages (apt)
#   mariadb-11.8   23316/23317/23318/23319                   Debian unstable, in a chroot
#   mysql-9.7      23326/23327/23328/23329                   Debian unstable, in a chroot
#
#   start   start the four roles (idempotent; a running server is left alone unless
#           its configuration changed), set up GTID replication primary -> replica
#           once, create/refresh the test users on every start, restart stopped
#           replication threads; the first start builds the chroot and the certs
#   stop    stop tls, lctn1 and replica, then primary (SIGTERM to the pid in each pid
#           file, SIGKILL after 30s); unmount anything left mounted below the root
#   restart ROLE [SECONDS]
#           fault injection: stop that one running role as stop does, keep it down
#           SECONDS (default 0), start it again with the settings it ran with, wait
#           until it answers and, for primary and replica, until the replica's IO and
#           SQL threads run again; print how long it was down. Other roles and
#           connected clients are left alone (the restarted server drops its clients)
#   reset   stop, delete the servers' state (not the chroots, the certs or the template
#           data directories), start
#   status  show the servers and replication; exit 0 only if all four roles are up
#           and the replica's IO and SQL threads run
#   env     print `export` lines for the test harness:
#             eval "$(e2e/db/topology.sh mysql-9.7 env)"
#   client  run the server's own command-line client (in its chroot for the chroot
#           servers) with --no-defaults and the given arguments (e2e/db/client.sh)
#
# Roles: primary (server-id 1) -> replica (server-id 2), GTID replication with
# auto-position; tls (server-id 3) is standalone, binary logging like the primary,
# require_secure_transport=ON, and has the extra user 'ghost_x509' (REQUIRE X509);
# lctn1 (server-id 4) is standalone, binary logging like the primary, with the primary's
# users, and runs with lower_case_table_names=1 (its data directory is initialised with
# it too: MySQL cannot change the setting after initialisation).
# Every server has TLS available (not required) with the certificates in
# $GHOST_CACHE_DIR/tls: ca.pem/ca-key.pem, server-cert.pem/server-key.pem (subjectAltName
# IP:127.0.0.1 and the pods' bridge address IP:10.244.0.1, no DNS name, so "localhost"
# fails hostname verification while the CA check passes), client-cert.pem/client-key.pem (CN=ghost-client), other-ca.pem (an unrelated
# CA). Servers listen on 127.0.0.1 only.
#
# Chroot servers: Debian unstable's packages are unpacked (mmdebstrap, extract variant:
# no maintainer scripts run, so no service ever starts) into $GHOST_CACHE_DIR/roots/NAME,
# built in a temporary directory and renamed into place, with a stamp file listing the
# package versions. Each command that runs inside a root (server, client) gets its own
# private mount namespace (unshare) in which /proc, /dev, the state directory and the
# certificate directory are mounted into the root at their host paths before chroot: the
# mounts vanish with the process, so the host never sees them, stop has nothing to
# unmount and no rm -rf can walk through a live bind mount. Paths (sockets, logs) are the
# same inside and outside the root.
#
# Root logs in through the unix socket with the server's own client (inside the chroot
# for chroot servers): unix_socket auth on MariaDB, an empty password on MySQL
# (--initialize-insecure; 'root'@'localhost' is not reachable over TCP). The test users
# log in over TCP; the host's `mariadb` client (libmariadb) handles MySQL's
# caching_sha2_password (it fetches the server's RSA key on a plain connection), so
# GHOST_TEST_CLIENT is `mariadb` for every server. Every client and server call uses
# --no-defaults: no my.cnf is ever read. start, stop and reset hold a lock (flock on
# STATE/.lock), so concurrent calls for one SERVER queue up.
#
# Environment (defaults in brackets):
#   GHOST_CACHE_DIR            cache dir [$HOME/.cache/ghost]; state in
#                              $GHOST_CACHE_DIR/db/SERVER (mariadb-10.11: $GHOST_CACHE_DIR/mariadb)
#   GHOST_MARIADB_DIR          mariadb-10.11 state dir [$GHOST_CACHE_DIR/mariadb]
#   GHOST_PRIMARY_PORT, GHOST_REPLICA_PORT, GHOST_TLS_PORT, GHOST_LCTN1_PORT
#                              override the roles' ports
#   GHOST_TEST_PASSWORD        password of 'ghost'@'127.0.0.1' [ghost-pass]
#   GHOST_TEST_ADMIN_PASSWORD  password of 'ghost_admin'@'127.0.0.1' [ghost-admin-pass]
#   GHOST_DEBIAN_MIRROR        where the chroots come from [http://deb.debian.org/debian]
set -euo pipefail

# mariadbd, chroot and unshare live in /usr/sbin or /sbin, which are not always on PATH.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

CACHE_DIR="${GHOST_CACHE_DIR:-${HOME:-/root}/.cache/ghost}"
TLS_DIR="$CACHE_DIR/tls"
ROOTS_DIR="$CACHE_DIR/roots"
DEBIAN_MIRROR="${GHOST_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
HOST=127.0.0.1
ROLES=(primary replica tls lctn1)

GHOST_USER=ghost
GHOST_PASSWORD="${GHOST_TEST_PASSWORD:-ghost-pass}"
ADMIN_USER=ghost_admin
ADMIN_PASSWORD="${GHOST_TEST_ADMIN_PASSWORD:-ghost-admin-pass}"
X509_USER=ghost_x509
X509_PASSWORD=ghost-x509-pass
REPL_USER=repl
REPL_PASSWORD=repl-pass

START_TIMEOUT=60
STOP_TIMEOUT=30
REPL_TIMEOUT=30
CERT_DAYS=3650

# Inside a root, the template data directories (see template_of).
TEMPLATE_DATADIR=/var/lib/ghost-template
LCTN1_TEMPLATE_DATADIR=/var/lib/ghost-template-lctn1

# ---------------------------------------------------------------------------------------
# Flavours: everything that differs between the servers is set here or in the functions
# that follow up to "Helpers" (case on $FLAVOUR or $SERVER).
# ---------------------------------------------------------------------------------------

SERVER=""
FLAVOUR=""       # mariadb | mysql: SQL dialect, server options
ROOT=""          # chroot directory; empty: the host's binaries
ROOT_PACKAGES="" # packages unpacked into the root (dependencies follow)
MAIN_PACKAGES="" # their versions are printed and checked against VERSION_PREFIX
ROOT_RECIPE=""   # a root whose stamp holds another recipe is rebuilt
VERSION_PREFIX=""
SERVER_BIN=""
CLIENT_BIN=""
BASE_DIR=""
PRIMARY_PORT=""
REPLICA_PORT=""
TLS_PORT=""
LCTN1_PORT=""

select_server() {
  SERVER=$1
  local ports
  case $SERVER in
  mariadb-10.11)
    FLAVOUR=mariadb
    VERSION_PREFIX=10.11
    ports="23306 23307 23308 23309"
    # The state directory predates the other servers; keep it where callers expect it.
    BASE_DIR="${GHOST_MARIADB_DIR:-$CACHE_DIR/mariadb}"
    ;;
  mariadb-11.8)
    FLAVOUR=mariadb
    VERSION_PREFIX=11.8
    ports="23316 23317 23318 23319"
    ROOT="$ROOTS_DIR/mariadb-sid"
    # mariadb-install-db is a shell script: it needs sh and a few coreutils.
    ROOT_PACKAGES="base-files base-passwd dash coreutils sed grep findutils hostname mariadb-server-core mariadb-client-core"
    MAIN_PACKAGES="mariadb-server-core mariadb-client-core"
    ;;
  mysql-9.7)
    FLAVOUR=mysql
    VERSION_PREFIX=9.7
    ports="23326 23327 23328 23329"
    ROOT="$ROOTS_DIR/mysql-sid"
    ROOT_PACKAGES="base-files base-passwd mysql-server-core mysql-client-core"
    MAIN_PACKAGES="mysql-server-core mysql-client-core"
    ;;
  *)
    echo "topology: unknown SERVER '$SERVER' (mariadb-10.11, mariadb-11.8 or mysql-9.7)" >&2
    exit 2
    ;;
  esac
  # Bump the leading number when the build steps after unpacking change.
  ROOT_RECIPE="1 sid extract $ROOT_PACKAGES"
  [[ -n $BASE_DIR ]] || BASE_DIR="$CACHE_DIR/db/$SERVER"
  # Canonical: server_pid compares it with the kernel's view of a process's root.
  [[ -z $ROOT ]] || ROOT=$(realpath -m "$ROOT")
  read -r PRIMARY_PORT REPLICA_PORT TLS_PORT LCTN1_PORT <<<"$ports"
  PRIMARY_PORT="${GHOST_PRIMARY_PORT:-$PRIMARY_PORT}"
  REPLICA_PORT="${GHOST_REPLICA_PORT:-$REPLICA_PORT}"
  TLS_PORT="${GHOST_TLS_PORT:-$TLS_PORT}"
  LCTN1_PORT="${GHOST_LCTN1_PORT:-$LCTN1_PORT}"
  case $FLAVOUR in
  mariadb) SERVER_BIN=mariadbd CLIENT_BIN=mariadb ;;
  mysql) SERVER_BIN=mysqld CLIENT_BIN=mysql ;;
  esac
}

# Privileges of the 'ghost' (and 'ghost_x509') user.
ghost_grants() {
  case $FLAVOUR in
  # All exist in MariaDB 10.11 and 11.8 (SLAVE MONITOR is an alias of REPLICA MONITOR).
  mariadb) echo "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, LOCK TABLES, TRIGGER, EVENT, PROCESS, RELOAD, REPLICATION SLAVE, BINLOG MONITOR, REPLICA MONITOR, REPLICATION SLAVE ADMIN, SLAVE MONITOR, REPLICATION MASTER ADMIN, BINLOG ADMIN" ;;
  # SELECT ON *.* covers performance_schema. REPLICATION_SLAVE_ADMIN stops and starts
  # replication (--test-on-replica), SYSTEM_VARIABLES_ADMIN sets binlog_format (--switch-to-rbr):
  # the dynamic privileges that stand in for MariaDB's admin ones above.
  mysql) echo "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, LOCK TABLES, TRIGGER, EVENT, PROCESS, RELOAD, REPLICATION SLAVE, REPLICATION CLIENT, REPLICATION_SLAVE_ADMIN, SYSTEM_VARIABLES_ADMIN" ;;
  esac
}

# server_args <role>: the server's command line, into the global array ARGS.
ARGS=()
server_args() {
  local role=$1 dir datadir
  dir=$(role_dir "$role")
  datadir=$(datadir_of "$role")
  ARGS=(
    --no-defaults
    --datadir="$datadir"
    --socket="$(sock_of "$role")"
    --port="$(port_of "$role")"
    --bind-address="$HOST"
    --user=root
    --pid-file="$(pidfile_of "$role")"
    --log-error="$(errlog_of "$role")"
  )
  case $FLAVOUR in
  mariadb)
    ARGS+=(
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
    ;;
  mysql)
    ARGS+=(
      # The X plugin would listen on 33060 (all interfaces, one port for all servers).
      --mysqlx=OFF
      # Debian's default (/var/lib/mysql-files) does not exist in the root: startup fails.
      --secure-file-priv="$dir/files"
      --log-bin="$datadir/mysql-bin"
      --gtid-mode=ON
      --enforce-gtid-consistency=ON
      --log-replica-updates=ON
      # Deprecated in 9.x (a warning in the error log) but still honoured.
      --binlog-format=ROW
      --binlog-row-image=FULL
      --innodb-buffer-pool-size=128M
      --max-allowed-packet=64M
      --skip-name-resolve
      --character-set-server=utf8mb4
      --log-bin-trust-function-creators=ON
    )
    ;;
  esac
  ARGS+=(
    --ssl-ca="$TLS_DIR/ca.pem"
    --ssl-cert="$TLS_DIR/server-cert.pem"
    --ssl-key="$TLS_DIR/server-key.pem"
  )
  case $role in
  primary) ARGS+=(--server-id=1 --event-scheduler=ON) ;;
  replica) ARGS+=(--server-id=2 --relay-log="$datadir/relay-bin") ;;
  # performance_schema on (MariaDB's default is off): tests/tls.rs asks it how each of ghost's
  # connections is carried.
  tls) ARGS+=(--server-id=3 --event-scheduler=ON --require-secure-transport=ON --performance-schema=ON) ;;
  lctn1) ARGS+=(--server-id=4 --event-scheduler=ON "$(lctn_arg 1)") ;;
  esac
  # MySQL's lctn1 also runs without performance_schema (the primary keeps MySQL's default, ON):
  # the cut-over must not depend on it.
  if [[ $FLAVOUR == mysql && $role == lctn1 ]]; then
    ARGS+=(--performance-schema=OFF)
  fi
}

# The option that both initialises and runs lctn1 (spelled alike by both flavours).
lctn_arg() { echo "--lower-case-table-names=$1"; }

# Templates: a role's data directory starts as a copy of a template data directory,
# initialised once (a copy takes 0.1-0.3s, an initialisation 3-8s of both cores). lctn1
# has its own, initialised with lower_case_table_names=1. In a root they live in the root
# (the main one made when the root is built, lctn1's on first need: roots built before
# lctn1 existed lack it); for the host's server in the state directory, beside the
# version of the server that made them (after an upgrade they are made again). reset
# keeps them.

# template_of <role>: the template's path as the server sees it (inside the root).
template_of() {
  local name=${TEMPLATE_DATADIR##*/}
  [[ $1 != lctn1 ]] || name=${LCTN1_TEMPLATE_DATADIR##*/}
  if [[ -n $ROOT ]]; then echo "/var/lib/$name"; else echo "$BASE_DIR/.$name"; fi
}

host_server_version() { "$SERVER_BIN" --version 2>/dev/null | head -n 1; }

# init_template <root or ""> <datadir> [server option...]: initialise a data directory
# (a path inside the root; without a root, with the host's server).
init_template() {
  local root=$1 datadir=$2
  local -a pre=()
  shift 2
  [[ -z $root ]] || pre=(in_root "$root" --)
  case $FLAVOUR in
  mariadb)
    # The servers' redo log size (server_args): a smaller copy, and no resize at start.
    "${pre[@]}" mariadb-install-db --no-defaults --datadir="$datadir" --user=root \
      --auth-root-authentication-method=socket --skip-test-db --innodb-log-file-size=16M "$@"
    ;;
  mysql)
    # No --log-bin: the template must hold no GTIDs, or a replica would skip them.
    # Without fsyncs (the server still shuts down cleanly): 6s instead of 9s.
    "${pre[@]}" mysqld --no-defaults --initialize-insecure --user=root \
      --datadir="$datadir" --innodb-flush-log-at-trx-commit=0 \
      --innodb-doublewrite=OFF --innodb-flush-method=nosync "$@"
    ;;
  esac
}

# ensure_template <role>: the role's template, made if missing (beside, then renamed: an
# interrupted initialisation is not taken for a template). Runs under the start lock.
ensure_template() {
  local role=$1 inside dest t0 d
  local -a opts=()
  inside=$(template_of "$role")
  dest="$ROOT$inside"
  if [[ -d $dest ]]; then
    [[ -z $ROOT && $(cat "$dest.version" 2>/dev/null) != "$(host_server_version)" ]] || return 0
    log "template $dest was made by another server version; making it again"
  fi
  t0=$(now_ms)
  [[ $role != lctn1 ]] || opts+=("$(lctn_arg 1)")
  for d in "$dest.tmp" "$dest.tmpdir"; do
    if [[ -e $d ]]; then safe_rm_rf "$d"; fi
  done
  # Its own temporary directory: servers may be running, or initialising (see
  # ENGINE_TMPDIR).
  mkdir -p "$dest.tmpdir"
  if ! init_template "$ROOT" "$inside.tmp" "${opts[@]}" --tmpdir="$inside.tmpdir" >"$dest.log" 2>&1; then
    echo "$SERVER: ERROR: initialising the template data directory $dest failed; last lines of $dest.log:" >&2
    tail -n 30 "$dest.log" >&2
    exit 1
  fi
  safe_rm_rf "$dest.tmpdir"
  if [[ -e $dest ]]; then safe_rm_rf "$dest"; fi
  mv -T "$dest.tmp" "$dest"
  [[ -n $ROOT ]] || host_server_version >"$dest.version"
  log "template data directory $dest initialised ($(elapsed "$t0"))"
}

# quiesce <role>: before SIGTERM. A MySQL 9.7 server with a binlog dump thread connected
# spends ~8s of its shutdown killing the event scheduler; stopped first, it does not.
quiesce() {
  case $FLAVOUR in
  mysql)
    engine_argv
    timeout 5 "${IN_ROOT[@]}" "$CLIENT_BIN" --no-defaults -S "$(sock_of "$1")" -uroot \
      -e 'SET GLOBAL event_scheduler=OFF' >/dev/null 2>&1 || true
    ;;
  esac
}

# Replication status: statement and field names.
repl_status_sql() {
  case $FLAVOUR in
  mariadb) echo 'SHOW SLAVE STATUS' ;;
  mysql) echo 'SHOW REPLICA STATUS' ;;
  esac
}
repl_field() { # repl_field io|sql|lag|pos
  case $FLAVOUR:$1 in
  mariadb:io) echo Slave_IO_Running ;;
  mariadb:sql) echo Slave_SQL_Running ;;
  mariadb:lag) echo Seconds_Behind_Master ;;
  mariadb:pos) echo Gtid_IO_Pos ;;
  mysql:io) echo Replica_IO_Running ;;
  mysql:sql) echo Replica_SQL_Running ;;
  mysql:lag) echo Seconds_Behind_Source ;;
  mysql:pos) echo Retrieved_Gtid_Set ;;
  esac
}
start_replica_sql() {
  case $FLAVOUR in
  mariadb) echo 'START SLAVE' ;;
  mysql) echo 'START REPLICA' ;;
  esac
}

# The replica's source, set once.
change_source_sql() {
  local pw
  pw=$(sql_str "$REPL_PASSWORD")
  case $SERVER in
  mariadb-10.11)
    echo "CHANGE MASTER TO MASTER_HOST='$HOST', MASTER_PORT=$PRIMARY_PORT,
      MASTER_USER='$REPL_USER', MASTER_PASSWORD='$pw',
      MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1"
    ;;
  mariadb-11.8)
    # Since 11.4 the replica uses TLS and verifies the source's certificate by default:
    # name our CA (the certificate's IP:127.0.0.1 matches MASTER_HOST).
    echo "CHANGE MASTER TO MASTER_HOST='$HOST', MASTER_PORT=$PRIMARY_PORT,
      MASTER_USER='$REPL_USER', MASTER_PASSWORD='$pw',
      MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1,
      MASTER_SSL=1, MASTER_SSL_CA='$(sql_str "$TLS_DIR/ca.pem")', MASTER_SSL_VERIFY_SERVER_CERT=1"
    ;;
  mysql-9.7)
    # caching_sha2_password needs TLS or the source's RSA key to send the password.
    echo "CHANGE REPLICATION SOURCE TO SOURCE_HOST='$HOST', SOURCE_PORT=$PRIMARY_PORT,
      SOURCE_USER='$REPL_USER', SOURCE_PASSWORD='$pw',
      SOURCE_AUTO_POSITION=1, SOURCE_SSL=1, GET_SOURCE_PUBLIC_KEY=1, SOURCE_CONNECT_RETRY=1"
    ;;
  esac
}

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------

log() { printf '%s: %s\n' "$SERVER" "$*"; }
warn() { printf '%s: WARNING: %s\n' "$SERVER" "$*" >&2; }
die() {
  printf '%s: ERROR: %s\n' "${SERVER:-topology}" "$*" >&2
  exit 1
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { # secs <ms> -> "1.8s"
  printf '%d.%ds' $(($1 / 1000)) $((($1 % 1000) / 100))
}
elapsed() { secs $(($(now_ms) - $1)); } # elapsed <start_ms> -> "1.8s"

role_dir() { echo "$BASE_DIR/$1"; }
datadir_of() { echo "$BASE_DIR/$1/data"; }
sock_of() { echo "$BASE_DIR/$1/mysqld.sock"; }
pidfile_of() { echo "$BASE_DIR/$1/mysqld.pid"; }
errlog_of() { echo "$BASE_DIR/$1/error.log"; }
port_of() {
  case $1 in
  primary) echo "$PRIMARY_PORT" ;;
  replica) echo "$REPLICA_PORT" ;;
  tls) echo "$TLS_PORT" ;;
  lctn1) echo "$LCTN1_PORT" ;;
  esac
}

# SQL string literal body: escape backslashes and single quotes.
sql_str() {
  local s=${1//\\/\\\\}
  printf '%s' "${s//\'/\'\'}"
}

# assert_no_mounts <path>...: die if anything is mounted at or below a path, so that an
# rm -rf never walks into a bind-mounted directory.
assert_no_mounts() {
  local p target
  for p in "$@"; do
    [[ -n $p && $p != / ]] || die "refusing to remove '$p'"
    while IFS= read -r target; do
      if [[ $target == "$p" || $target == "$p"/* ]]; then
        die "$target is mounted (below $p); unmount it first"
      fi
    done < <(findmnt -rn -o TARGET)
  done
}

safe_rm_rf() {
  assert_no_mounts "$@"
  rm -rf -- "$@"
}

# The command that in_root runs in its private mount namespace (POSIX sh: dash).
# Arguments: ROOT BIND... -- COMMAND... ; each BIND is mounted at the same path inside.
# shellcheck disable=SC2016 # expanded by that sh, not here
IN_ROOT_SH='set -e
root=$1
shift
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
while [ "$1" != "--" ]; do
  mkdir -p "$root$1"
  mount --bind "$1" "$root$1"
  shift
done
shift
exec chroot "$root" "$@"'

# in_root_argv <root> [bind dir...] --: into the global array IN_ROOT, the command prefix
# that runs a command chrooted into a root, with /proc, /dev and the bind dirs mounted in
# a mount namespace of its own (the mounts end with the process; the host never sees
# them). Every step execs, so when started in the background, $! is the pid of the
# command itself. The environment is reset: the host's PATH, TMPDIR or locale mean
# nothing inside the root.
IN_ROOT=()
in_root_argv() {
  local -a envs=(PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)
  [[ -z ${MYSQL_PWD+x} ]] || envs+=("MYSQL_PWD=$MYSQL_PWD")
  [[ -z $ENGINE_TMPDIR ]] || envs+=("TMPDIR=$ENGINE_TMPDIR")
  IN_ROOT=(env -i "${envs[@]}" unshare --mount --propagation private -- sh -c "$IN_ROOT_SH" in-root "$@")
}

# in_root <root> [bind dir...] -- <command...>
in_root() {
  local -a pre=()
  while [[ $1 != -- ]]; do
    pre+=("$1")
    shift
  done
  shift
  in_root_argv "${pre[@]}" --
  "${IN_ROOT[@]}" "$@"
}

# A server's TMPDIR (set around engine_argv by spawn_server). A starting server deletes
# every "#sql*" file in its temporary directory: in a directory shared with another
# server it deletes that server's temporary tables (two data directory initialisations
# at once fail with "Unknown table 'mysql.tmp_user_sys'"). The environment rather than
# --tmpdir, so that the recorded configuration of servers started before it is unchanged
# and they are not restarted for it; each server gets its own directory when it is next
# (re)started.
ENGINE_TMPDIR=""

# engine_argv: into IN_ROOT, the prefix that runs one of the server's binaries: nothing
# on the host (but ENGINE_TMPDIR), else in the root with the state and certificate
# directories visible at their host paths.
engine_argv() {
  if [[ -z $ROOT ]]; then
    IN_ROOT=()
    [[ -z $ENGINE_TMPDIR ]] || IN_ROOT=(env "TMPDIR=$ENGINE_TMPDIR")
  else
    mkdir -p "$BASE_DIR" "$TLS_DIR"
    in_root_argv "$ROOT" "$BASE_DIR" "$TLS_DIR" --
  fi
}

# engine <command...>
engine() {
  engine_argv
  "${IN_ROOT[@]}" "$@"
}

# client <role> [client args...]: root over the unix socket, with the server's own client.
client() {
  local role=$1
  shift
  engine "$CLIENT_BIN" --no-defaults -S "$(sock_of "$role")" -uroot "$@"
}

# sql <role> <statements>: batch mode, no column names.
sql() { client "$1" -N -B -e "$2"; }

# tcp_login_ok <port> <user> <password>: as the tests log in (the host's mariadb client).
tcp_login_ok() {
  MYSQL_PWD="$3" mariadb --no-defaults -h"$HOST" -P"$1" -u"$2" -N -B -e 'SELECT 1' >/dev/null 2>&1
}

# ---------------------------------------------------------------------------------------
# Host packages, chroot roots, certificates
# ---------------------------------------------------------------------------------------

apt_install() {
  [[ $(id -u) -eq 0 ]] || die "need root to apt-get install $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

ensure_host_packages() {
  local t0 cmd
  local -a need=()
  t0=$(now_ms)
  if [[ -z $ROOT ]]; then
    for cmd in mariadbd mariadb mariadb-install-db; do
      if ! command -v "$cmd" >/dev/null; then
        need+=(mariadb-server mariadb-client)
        break
      fi
    done
  else
    command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
    # The test client (GHOST_TEST_CLIENT) and the TCP login checks.
    command -v mariadb >/dev/null || need+=(mariadb-client)
    command -v unshare >/dev/null || need+=(util-linux)
  fi
  command -v openssl >/dev/null || need+=(openssl)
  command -v findmnt >/dev/null || need+=(mount)
  ((${#need[@]})) || return 0
  log "installing ${need[*]} via apt-get"
  apt_install "${need[@]}"
  if [[ -z $ROOT ]]; then
    command -v mariadbd >/dev/null || die "mariadbd still not found after installing mariadb-server"
  fi
  log "host packages installed ($(elapsed "$t0"))"
}

stamp_recipe() {
  [[ ! -f $1/.ghost-stamp ]] || sed -n 's/^recipe: //p' "$1/.ghost-stamp"
}

# Versions of MAIN_PACKAGES in a root, "pkg version, pkg version".
root_versions() {
  local pkg out=""
  for pkg in $MAIN_PACKAGES; do
    out+="${out:+, }$pkg $(awk -v p="$pkg" '$1 == p { print $2 }' "$1/.ghost-packages")"
  done
  echo "$out"
}

check_version() { # check_version <upstream version, e.g. 9.7.4>
  [[ $1 == "$VERSION_PREFIX".* ]] ||
    warn "$SERVER runs version $1, not $VERSION_PREFIX.x: Debian's unstable suite moved on"
}

# The server package's upstream version (epoch and Debian revision stripped).
root_server_version() {
  local v
  v=$(awk -v p="${MAIN_PACKAGES%% *}" '$1 == p { print $2 }' "$ROOT/.ghost-packages")
  v=${v#*:}
  echo "${v%%[-+]*}"
}

any_role_running() {
  local role
  for role in "${ROLES[@]}"; do
    server_pid "$role" >/dev/null && return 0
  done
  return 1
}

# Build the root (in a temporary directory renamed into place: an interrupted build never
# leaves a root that looks complete) unless one with the same recipe exists.
ensure_root() {
  [[ -n $ROOT ]] || return 0
  local t0 tmp log_file recipe
  t0=$(now_ms)
  recipe=$(stamp_recipe "$ROOT")
  if [[ -n $recipe ]]; then
    if [[ $recipe == "$ROOT_RECIPE" ]]; then
      log "root $ROOT: $(root_versions "$ROOT")"
      check_version "$(root_server_version)"
      return 0
    fi
    if any_role_running; then
      warn "root $ROOT was built by another recipe; servers run from it, so keeping it (stop, then start to rebuild)"
      return 0
    fi
    log "root $ROOT was built by another recipe; rebuilding"
  fi
  mkdir -p "$ROOTS_DIR"
  # Leftovers of interrupted builds (nothing runs from them).
  local stale
  for stale in "$ROOTS_DIR/.build.${ROOT##*/}".*; do
    if [[ -e $stale ]]; then safe_rm_rf "$stale"; fi
  done
  tmp=$(mktemp -d "$ROOTS_DIR/.build.${ROOT##*/}.XXXXXX")
  log_file="$ROOTS_DIR/${ROOT##*/}.build.log"
  log "building root $ROOT from Debian unstable: $ROOT_PACKAGES (log: $log_file)"
  # extract: unpack the packages and their dependencies, run no maintainer script (so no
  # service starts and no dpkg is needed inside); the hook records the package versions
  # before apt's cache is cleaned. The mirror's Release file may be past its Valid-Until.
  # shellcheck disable=SC2016 # $1 is the hook's argument
  if ! mmdebstrap --mode=root --variant=extract --format=directory \
    --include="${ROOT_PACKAGES// /,}" \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --aptopt='Acquire::Retries "3"' \
    --extract-hook='for f in "$1"/var/cache/apt/archives/*.deb; do dpkg-deb --show --showformat="\${Package} \${Version}\n" "$f"; done | sort >"$1/.ghost-packages"' \
    sid "$tmp/root" "$DEBIAN_MIRROR" >"$log_file" 2>&1; then
    tail -n 30 "$log_file" >&2
    safe_rm_rf "$tmp"
    die "mmdebstrap failed (log: $log_file)"
  fi
  log "packages unpacked ($(elapsed "$t0"))"
  # No maintainer script ran: users/groups (the servers look root up) and hosts by hand.
  cp "$tmp/root/usr/share/base-passwd/passwd.master" "$tmp/root/etc/passwd"
  cp "$tmp/root/usr/share/base-passwd/group.master" "$tmp/root/etc/group"
  cp /etc/hosts "$tmp/root/etc/hosts"
  local t1
  t1=$(now_ms)
  if ! init_template "$tmp/root" "$TEMPLATE_DATADIR" >>"$log_file" 2>&1; then
    tail -n 30 "$log_file" >&2
    safe_rm_rf "$tmp"
    die "initialising the template data directory failed (log: $log_file)"
  fi
  log "template data directory initialised ($(elapsed "$t1"))"
  {
    echo "recipe: $ROOT_RECIPE"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) from $DEBIAN_MIRROR sid"
    cat "$tmp/root/.ghost-packages"
  } >"$tmp/root/.ghost-stamp"
  if [[ -e $ROOT ]]; then
    mv -T "$ROOT" "$tmp/old"
  fi
  mv -T "$tmp/root" "$ROOT"
  safe_rm_rf "$tmp"
  log "root $ROOT built: $(root_versions "$ROOT") ($(elapsed "$t0"))"
  check_version "$(root_server_version)"
}

# The server certificate's names: loopback, and the pods' bridge of e2e/k8s/node.sh, whose relay
# forwards to the TLS server and where an engine pod's verify-identity checks the address it dials.
server_names="IP:127.0.0.1,IP:${GHOST_NODE_BRIDGE_IP:-10.244.0.1}"
tls_files=(ca.pem ca-key.pem server-cert.pem server-key.pem client-cert.pem client-key.pem other-ca.pem other-ca-key.pem)

# make_cert <dir> <name> <subject> <extensions> [<ca name>]: RSA 2048 key and
# certificate, signed by <ca name> (self-signed without it).
make_cert() {
  local dir=$1 name=$2 subj=$3 ext=$4 ca=${5:-}
  local key="$dir/$name-key.pem" cert="$dir/$name.pem"
  [[ $name == *ca ]] || cert="$dir/$name-cert.pem"
  printf '%s\n' "$ext" >"$dir/$name.ext"
  openssl genrsa -out "$key" 2048 2>/dev/null
  openssl req -new -key "$key" -subj "$subj" -out "$dir/$name.csr"
  local -a sign=(-signkey "$key")
  [[ -z $ca ]] || sign=(-CA "$dir/$ca.pem" -CAkey "$dir/$ca-key.pem")
  openssl x509 -req -in "$dir/$name.csr" "${sign[@]}" -days "$CERT_DAYS" -sha256 \
    -set_serial "0x$(openssl rand -hex 16)" -extfile "$dir/$name.ext" -out "$cert" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

# Generate the test certificates once, again when the server's names change (shared by all
# servers; a lock keeps two starts of different servers from racing).
certs_current() {
  local f
  for f in "${tls_files[@]}"; do
    [[ -s $TLS_DIR/$f ]] || return 1
  done
  [[ "$(cat "$TLS_DIR/server-names" 2>/dev/null)" == "$server_names" ]]
}

ensure_certs() {
  local t0 tmp
  certs_current && return 0
  mkdir -p "$CACHE_DIR"
  exec 8>"$CACHE_DIR/.tls.lock"
  flock 8
  if ! certs_current; then
    t0=$(now_ms)
    tmp=$(mktemp -d "$CACHE_DIR/.tls.XXXXXX")
    local ca="basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash"
    local leaf="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid"
    make_cert "$tmp" ca "/CN=ghost test CA" "$ca"
    # No DNS name (so "localhost" fails verify-identity), and the CN is no host name either:
    # without DNS names in subjectAltName, OpenSSL's host check falls back to the CN.
    make_cert "$tmp" server "/CN=ghost test server" "$leaf
extendedKeyUsage=serverAuth
subjectAltName=$server_names" ca
    echo "$server_names" >"$tmp/server-names"
    make_cert "$tmp" client "/CN=ghost-client" "$leaf
extendedKeyUsage=clientAuth" ca
    make_cert "$tmp" other-ca "/CN=ghost other test CA" "$ca"
    # Test-only keys: readable by any user a server might run as.
    chmod 0755 "$tmp"
    chmod 0644 "$tmp"/*.pem
    [[ ! -e $TLS_DIR ]] || safe_rm_rf "$TLS_DIR"
    mv -T "$tmp" "$TLS_DIR"
    log "TLS certificates generated in $TLS_DIR ($(elapsed "$t0"))"
  fi
  flock -u 8
  exec 8>&-
}

# The CA's fingerprint: part of each server's recorded configuration, so that a server
# still holding replaced certificates is restarted.
ca_fingerprint() {
  openssl x509 -in "$TLS_DIR/ca.pem" -noout -fingerprint -sha256 2>/dev/null || echo none
}

# ---------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------

# server_pid <role>: print the pid from the pid file if it names a live server process
# running from this server's root; return 1 otherwise.
server_pid() {
  local pidfile pid comm want_root
  pidfile=$(pidfile_of "$1")
  [[ -s $pidfile ]] || return 1
  pid=$(tr -dc '0-9' <"$pidfile")
  [[ -n $pid ]] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [[ $comm == mariadbd || $comm == mysqld ]] || return 1
  want_root=${ROOT:-/}
  [[ $(readlink "/proc/$pid/root" 2>/dev/null) == "$want_root" ]] || return 1
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
      echo "$SERVER: ERROR: $role $SERVER_BIN (pid $pid) exited during startup" >&2
      show_error_log "$role"
      exit 1
    fi
    sleep 0.2
  done
  echo "$SERVER: ERROR: $role not ready on $(sock_of "$role") after ${START_TIMEOUT}s" >&2
  show_error_log "$role"
  exit 1
}

# init_datadir <role>: the role's data directory, copied from its template (beside, then
# renamed: an interrupted copy is not taken for a data directory).
init_datadir() {
  local role=$1 datadir t0 d
  datadir=$(datadir_of "$role")
  t0=$(now_ms)
  for d in "$datadir" "$datadir.tmp"; do
    if [[ -e $d ]]; then safe_rm_rf "$d"; fi
  done
  cp -a "$ROOT$(template_of "$role")" "$datadir.tmp"
  # MySQL names a server by the UUID in auto.cnf; each role needs its own (replication
  # refuses a source with the replica's UUID): the server makes a new one on first start.
  [[ $FLAVOUR != mysql ]] || rm -f "$datadir.tmp/auto.cnf"
  mv -T "$datadir.tmp" "$datadir"
  log "$role datadir initialised in $datadir ($(elapsed "$t0"))"
}

# The configuration a server is started with, recorded beside it.
config_of() {
  server_args "$1"
  printf '%s\n' "${ARGS[@]}" "# root ${ROOT:-/}" "# ca $(ca_fingerprint)"
}
config_file() { echo "$(role_dir "$1")/server.conf"; }

# launch_server <role>: start the server (its datadir initialised) in the background with
# this script's configuration, recorded beside it; sets LAUNCHED_PID.
LAUNCHED_PID=""
launch_server() {
  config_of "$1" >"$(config_file "$1")"
  server_args "$1"
  spawn_server "$1"
}

# recorded_args <role>: into ARGS, the server options a role last ran with (its recorded
# configuration without the comment lines).
recorded_args() {
  local conf
  conf=$(config_file "$1")
  [[ -s $conf ]] || die "$1 has no recorded configuration ($conf); start the topology first"
  mapfile -t ARGS < <(grep -v '^# ' "$conf")
}

# spawn_server <role>: start the server with the options in ARGS; sets LAUNCHED_PID.
spawn_server() {
  local role=$1 dir
  dir=$(role_dir "$role")
  rm -f "$(pidfile_of "$role")"
  # The role is not running: a socket lock a killed server left names a pid that may belong to
  # another process by now, and MySQL would refuse to start ("Another process ... is using unix
  # socket file").
  rm -f "$(sock_of "$role")" "$(sock_of "$role").lock"
  mkdir -p "$dir/tmp"
  ENGINE_TMPDIR="$dir/tmp"
  engine_argv
  ENGINE_TMPDIR=""
  # New session, no controlling terminal, stdio detached and every other inherited fd
  # closed (the lock, a caller's pipes): the server outlives this script and holds
  # nothing a caller waits on. The subshell execs, so $! is the server's pid.
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then exec {fd}>&-; fi
    done
    exec setsid nohup "${IN_ROOT[@]}" "$SERVER_BIN" "${ARGS[@]}"
  ) </dev/null >>"$dir/stdout.log" 2>&1 &
  LAUNCHED_PID=$!
}

make_role_dirs() {
  mkdir -p "$(role_dir "$1")"
  [[ $FLAVOUR != mysql ]] || mkdir -p "$(role_dir "$1")/files"
}

# init_datadirs <role>...: the data directories that do not exist yet: first the
# templates they need (at once), then the copies (at once).
init_datadirs() {
  local role job
  local -a need=() jobs=()
  local -A templates=()
  for role in "$@"; do
    make_role_dirs "$role"
    [[ -d $(datadir_of "$role")/mysql ]] || need+=("$role")
  done
  for role in "${need[@]}"; do
    [[ -z ${templates[$(template_of "$role")]:-} ]] || continue
    templates[$(template_of "$role")]=1
    ensure_template "$role" &
    jobs+=("$!")
  done
  for job in "${jobs[@]}"; do
    wait "$job" || die "initialising a template data directory failed (see above)"
  done
  jobs=()
  for role in "${need[@]}"; do
    init_datadir "$role" &
    jobs+=("$!")
  done
  for job in "${jobs[@]}"; do
    wait "$job" || die "initialising a data directory failed (see above)"
  done
}

# Start every role that is not running, all at once, then wait for each.
start_servers() {
  local role pid
  local -a launch=()
  local -A waiting=()
  for role in "${ROLES[@]}"; do
    if pid=$(server_pid "$role"); then
      if ! answers "$role"; then
        # Live process that does not answer yet: probably still starting.
        log "$role process $pid is running but not answering yet; waiting"
        waiting[$role]="$pid $(now_ms)"
        continue
      fi
      if [[ $(config_of "$role") == "$(cat "$(config_file "$role")" 2>/dev/null)" ]]; then
        log "$role already up on $HOST:$(port_of "$role") (pid $pid)"
        continue
      fi
      # A newer script (or new certificates) changed what the server should run with.
      log "$role (pid $pid) runs with another configuration; restarting it"
      stop_servers "$role"
    fi
    launch+=("$role")
  done
  # Roles whose data directory exists start at once, the others once it is made (a new
  # template takes seconds).
  local -a fresh=()
  for role in "${launch[@]}"; do
    make_role_dirs "$role"
    if [[ -d $(datadir_of "$role")/mysql ]]; then
      pid=$(now_ms)
      launch_server "$role"
      waiting[$role]="$LAUNCHED_PID $pid"
    else
      fresh+=("$role")
    fi
  done
  if ((${#fresh[@]})); then
    init_datadirs "${fresh[@]}"
    for role in "${fresh[@]}"; do
      pid=$(now_ms)
      launch_server "$role"
      waiting[$role]="$LAUNCHED_PID $pid"
    done
  fi
  for role in "${ROLES[@]}"; do
    [[ -n ${waiting[$role]:-} ]] || continue
    # shellcheck disable=SC2086 # "pid start_ms"
    wait_ready "$role" ${waiting[$role]}
  done
}

# stop_servers <role>...: SIGTERM to each running one at once, wait for all (SIGKILL
# after STOP_TIMEOUT).
stop_servers() {
  local role pid t0 deadline
  local -A pids=()
  t0=$(now_ms)
  for role in "$@"; do
    if pid=$(server_pid "$role"); then
      quiesce "$role"
      kill -TERM "$pid" 2>/dev/null || true
      pids[$role]=$pid
    else
      rm -f "$(pidfile_of "$role")"
      log "$role not running"
    fi
  done
  deadline=$(($(now_ms) + STOP_TIMEOUT * 1000))
  for role in "$@"; do
    pid=${pids[$role]:-}
    [[ -n $pid ]] || continue
    while kill -0 "$pid" 2>/dev/null; do
      if (($(now_ms) >= deadline)); then
        warn "$role (pid $pid) did not exit within ${STOP_TIMEOUT}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 1
        break
      fi
      sleep 0.2
    done
    rm -f "$(pidfile_of "$role")"
    log "$role stopped (pid $pid, $(elapsed "$t0"))"
  done
}

# Host-visible mounts below the root: this script makes none (each process mounts in its
# own namespace), but unmount any a crashed older version or a manual debug session left,
# deepest first.
release_mounts() {
  [[ -n $ROOT ]] || return 0
  local target
  findmnt -rn -o TARGET | awk -v r="$ROOT/" 'index($0, r) == 1' | sort -r |
    while IFS= read -r target; do
      log "unmounting leftover $target"
      umount "$target" || umount -l "$target"
    done
}

# ---------------------------------------------------------------------------------------
# Replication and users
# ---------------------------------------------------------------------------------------

# Vertical output (-E): MySQL 9's client ignores \G in batch mode.
repl_status() { client replica -E -e "$(repl_status_sql)"; }

# field <name> <status text>
field() { sed -n "s/^ *$1: //p" <<<"$2" | head -n 1; }

# users_sql [x509]: the test database and users, idempotent; also resets passwords.
users_sql() {
  local gp ap grants
  gp=$(sql_str "$GHOST_PASSWORD")
  ap=$(sql_str "$ADMIN_PASSWORD")
  grants=$(ghost_grants)
  echo "
    CREATE DATABASE IF NOT EXISTS test;
    CREATE USER IF NOT EXISTS '$GHOST_USER'@'$HOST' IDENTIFIED BY '$gp';
    ALTER USER '$GHOST_USER'@'$HOST' IDENTIFIED BY '$gp';
    GRANT $grants ON *.* TO '$GHOST_USER'@'$HOST';
    CREATE USER IF NOT EXISTS '$ADMIN_USER'@'$HOST' IDENTIFIED BY '$ap';
    ALTER USER '$ADMIN_USER'@'$HOST' IDENTIFIED BY '$ap';
    GRANT ALL PRIVILEGES ON *.* TO '$ADMIN_USER'@'$HOST' WITH GRANT OPTION;"
  if [[ ${1:-} == x509 ]]; then
    local xp
    xp=$(sql_str "$X509_PASSWORD")
    echo "
    CREATE USER IF NOT EXISTS '$X509_USER'@'$HOST' IDENTIFIED BY '$xp' REQUIRE X509;
    ALTER USER '$X509_USER'@'$HOST' IDENTIFIED BY '$xp' REQUIRE X509;
    GRANT $grants ON *.* TO '$X509_USER'@'$HOST';"
  fi
}

# Create the test database and users on the primary (they replicate).
ensure_users() { sql primary "$(users_sql)"; }

# The tls role stands alone: its users, plus the certificate-only one.
ensure_tls_users() {
  local t0
  t0=$(now_ms)
  sql tls "$(users_sql x509)"
  log "tls users ready on $HOST:$TLS_PORT ($(elapsed "$t0"))"
}

# lctn1 stands alone too: the primary's users.
ensure_lctn1_users() {
  local t0
  t0=$(now_ms)
  sql lctn1 "$(users_sql)"
  log "lctn1 users ready on $HOST:$LCTN1_PORT ($(elapsed "$t0"))"
}

# Wait until both replication threads run and the test users exist on the replica.
wait_replication() {
  local t0 deadline st io sqlt users
  t0=$(now_ms)
  deadline=$((t0 + REPL_TIMEOUT * 1000))
  while :; do
    st=$(repl_status 2>/dev/null || true)
    io=$(field "$(repl_field io)" "$st")
    sqlt=$(field "$(repl_field sql)" "$st")
    users=$(sql replica "SELECT COUNT(*) FROM mysql.user WHERE host='$HOST' AND user IN ('$GHOST_USER','$ADMIN_USER')" 2>/dev/null || echo 0)
    if [[ $io == Yes && $sqlt == Yes && $users == 2 ]]; then
      log "replication running: primary $HOST:$PRIMARY_PORT -> replica $HOST:$REPLICA_PORT ($(elapsed "$t0"))"
      return 0
    fi
    if (($(now_ms) >= deadline)); then
      {
        echo "$SERVER: ERROR: replication not healthy after ${REPL_TIMEOUT}s" \
          "($(repl_field io)=${io:-?} $(repl_field sql)=${sqlt:-?} test users on replica=${users}/2)"
        echo "---- $(repl_status_sql) on the replica ----"
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
  sql replica "$(change_source_sql); $(start_replica_sql);"
  ensure_users
  wait_replication
}

# Replication already configured: restart stopped threads and make sure the test users
# can log in with the configured passwords.
check_replication() {
  local st io sqlt need_wait=0
  st=$(repl_status)
  io=$(field "$(repl_field io)" "$st")
  sqlt=$(field "$(repl_field sql)" "$st")
  if [[ $io != Yes || $sqlt != Yes ]]; then
    log "replica threads not running (IO=$io SQL=$sqlt); $(start_replica_sql)"
    sql replica "$(start_replica_sql)"
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

# ---------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------

lock() {
  mkdir -p "$BASE_DIR"
  exec 9>"$BASE_DIR/.lock"
  flock 9
}

# Binary logs of earlier runs, purged at start: every run writes gigabytes of them (the fault
# suite, the journeys) and nothing reads them later, so a machine that ran CI a few dozen times
# filled its disk. PURGE never removes a file a replica is still reading.
purge_binlogs() {
  local role before after
  for role in "${ROLES[@]}"; do
    [[ $(sql "$role" "SELECT @@log_bin" 2>/dev/null) == 1 ]] || continue
    before=$(du -sm "$(role_dir "$role")" | cut -f1)
    sql "$role" "PURGE BINARY LOGS BEFORE NOW()" >/dev/null ||
      die "PURGE BINARY LOGS failed on $role"
    after=$(du -sm "$(role_dir "$role")" | cut -f1)
    ((before - after > 0)) && log "$role: purged the binary logs of earlier runs ($((before - after)) MB)"
  done
  return 0
}

cmd_start() {
  local t0 st
  t0=$(now_ms)
  ensure_host_packages
  lock
  # The certificates (RSA keys: 2s) while the root downloads.
  ensure_certs &
  local certs_job=$!
  ensure_root
  if [[ -z $ROOT ]]; then
    log "host $($SERVER_BIN --version 2>/dev/null | head -n 1)"
    check_version "$($SERVER_BIN --version | sed -n 's/.* Ver \([0-9.]*\).*/\1/p')"
  fi
  wait "$certs_job" || die "generating the TLS certificates in $TLS_DIR failed"
  start_servers
  st=$(repl_status) || die "$(repl_status_sql) failed on the replica"
  if [[ -z $st ]]; then
    setup_replication
  else
    check_replication
  fi
  ensure_tls_users
  ensure_lctn1_users
  purge_binlogs
  log "started ($(elapsed "$t0"))"
}

cmd_stop() {
  lock
  # The replica (and the independent tls and lctn1 roles) first, so the replica's IO
  # thread does not spin reconnecting to a dead primary.
  stop_servers tls lctn1 replica
  stop_servers primary
  release_mounts
}

cmd_reset() {
  cmd_stop
  local -a dirs=()
  local role
  for role in "${ROLES[@]}"; do dirs+=("$(role_dir "$role")"); done
  log "deleting ${dirs[*]}"
  safe_rm_rf "${dirs[@]}"
  exec 9>&-
  cmd_start
}

# resume_replication: after a restart of the primary or the replica, wait until both
# replica threads run again. A MySQL IO thread gives up after SOURCE_RETRY_COUNT failed
# reconnects to a primary that stayed down, so stopped threads are started (once).
resume_replication() {
  local t0 deadline st io sqlt kicked=0
  t0=$(now_ms)
  deadline=$((t0 + REPL_TIMEOUT * 1000))
  while :; do
    st=$(repl_status 2>/dev/null || true)
    io=$(field "$(repl_field io)" "$st")
    sqlt=$(field "$(repl_field sql)" "$st")
    if [[ $io == Yes && $sqlt == Yes ]]; then
      log "replication running again ($(elapsed "$t0"))"
      return 0
    fi
    if [[ ($io == No || $sqlt == No) && $kicked == 0 ]]; then
      log "replica threads stopped (IO=$io SQL=$sqlt); $(start_replica_sql)"
      sql replica "$(start_replica_sql)" >/dev/null 2>&1 || true
      kicked=1
    fi
    if (($(now_ms) >= deadline)); then
      {
        echo "$SERVER: ERROR: replication not running ${REPL_TIMEOUT}s after the restart" \
          "($(repl_field io)=${io:-?} $(repl_field sql)=${sqlt:-?})"
        echo "---- $(repl_status_sql) on the replica ----"
        echo "$st"
      } >&2
      exit 1
    fi
    sleep 0.2
  done
}

# cmd_restart <role> [seconds]: an outage of one server, for fault tests. Holds the lock
# throughout, so a concurrent start cannot bring the server back early.
cmd_restart() {
  local role=$1 hold=${2:-0} t_term t_gone t_launch t_up
  local -a args
  [[ " ${ROLES[*]} " == *" $role "* ]] || die "restart: unknown role '$role' (${ROLES[*]})"
  [[ $hold =~ ^[0-9]+([.][0-9]+)?$ ]] || die "restart: SECONDS must be a number, not '$hold'"
  lock
  server_pid "$role" >/dev/null || die "restart: $role is not running (start the topology first)"
  # The options it runs with now, not what this script would choose: the same server
  # comes back even if the script changed since it started.
  recorded_args "$role"
  args=("${ARGS[@]}")
  t_term=$(now_ms)
  stop_servers "$role"
  t_gone=$(now_ms)
  if [[ $hold != 0 ]]; then
    log "$role kept down for ${hold}s"
    sleep "$hold"
  fi
  ARGS=("${args[@]}")
  t_launch=$(now_ms)
  spawn_server "$role"
  wait_ready "$role" "$LAUNCHED_PID" "$t_launch"
  t_up=$(now_ms)
  log "$role was down for $(secs $((t_up - t_term))) (stopping $(secs $((t_gone - t_term))), held down $(secs $((t_launch - t_gone))), starting $(secs $((t_up - t_launch))))"
  if [[ $role == primary || $role == replica ]]; then
    if server_up replica; then
      resume_replication
    else
      warn "replica not running: replication not checked"
    fi
  fi
}

cmd_status() {
  local ok=0 role pid st io sqlt err
  for role in "${ROLES[@]}"; do
    if pid=$(server_pid "$role") && answers "$role"; then
      echo "$role: up on $HOST:$(port_of "$role") (pid $pid, socket $(sock_of "$role"))"
    else
      echo "$role: DOWN (port $(port_of "$role"), dir $(role_dir "$role"))"
      ok=1
    fi
  done
  if server_up replica; then
    st=$(repl_status)
    if [[ -z $st ]]; then
      echo "replication: NOT CONFIGURED"
      ok=1
    else
      io=$(field "$(repl_field io)" "$st")
      sqlt=$(field "$(repl_field sql)" "$st")
      echo "replication: $(repl_field io)=$io $(repl_field sql)=$sqlt" \
        "$(repl_field lag)=$(field "$(repl_field lag)" "$st")" \
        "$(repl_field pos)=$(field "$(repl_field pos)" "$st")"
      for err in Last_IO_Error Last_SQL_Error; do
        [[ -z $(field "$err" "$st") ]] || echo "replication: $err: $(field "$err" "$st")"
      done
      [[ $io == Yes && $sqlt == Yes ]] || ok=1
    fi
  else
    echo "replication: unknown (replica down)"
    ok=1
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
    GHOST_REPLICA_SOCKET "$(sock_of replica)" \
    GHOST_TEST_SERVER "$SERVER" \
    GHOST_TEST_TLS "$HOST:$TLS_PORT" \
    GHOST_TEST_LCTN1 "$HOST:$LCTN1_PORT" \
    GHOST_TEST_TLS_DIR "$TLS_DIR" \
    GHOST_TEST_CLIENT mariadb
}

usage() {
  echo "usage: $0 {mariadb-10.11|mariadb-11.8|mysql-9.7} {start|stop|reset|status|env|restart ROLE [SECONDS]|client [ARGS...]}" >&2
  exit 2
}

main() {
  case ${1:-} in
  -h | --help | help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    return 0
    ;;
  esac
  [[ $# -ge 2 ]] || usage
  select_server "$1"
  local cmd=$2
  shift 2
  case $cmd in
  client) engine "$CLIENT_BIN" --no-defaults "$@" ;;
  restart)
    [[ $# -ge 1 && $# -le 2 ]] || usage
    cmd_restart "$@"
    ;;
  *)
    [[ $# -eq 0 ]] || usage
    case $cmd in
    start) cmd_start ;;
    stop) cmd_stop ;;
    reset) cmd_reset ;;
    status) cmd_status ;;
    env) cmd_env ;;
    -h | --help | help) main help ;;
    *) usage ;;
    esac
    ;;
  esac
}

main "$@"
