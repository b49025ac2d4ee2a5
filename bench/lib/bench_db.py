"""The benchmark's database side: connections, the table, its pristine source and checks.

Rows are generated on the server from their id with deterministic expressions, so every fill of a
given size holds the same bytes and no server needs a sequence engine (MySQL has none).
"""

import os
import sys
import time

import pymysql

DATABASE = "bench"
TABLE = "items"
PRISTINE = "items_pristine"
# Rows per INSERT ... SELECT: keeps each transaction (and its binlog event) moderate.
FILL_BATCH = 100_000

COLUMNS = "`id`, `score`, `code`, `amount`, `payload`, `created`"

CREATE_TABLE = """CREATE TABLE `{name}` (
  `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  `score` INT NOT NULL,
  `code` VARCHAR(16) NOT NULL,
  `amount` DECIMAL(12,2) NOT NULL,
  `payload` VARCHAR(200) NOT NULL,
  `created` DATETIME(6) NOT NULL,
  KEY `ix_score` (`score`),
  KEY `ix_created` (`created`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""

# One row as a function of its id {x}: payload 100-120 bytes, created spread over ~5 years.
# SHA2 and CRC32 only: MySQL 9.7 has no MD5() or SHA1().
ROW_EXPRESSIONS = """{x},
  CRC32({x}) % 1000000,
  LEFT(SHA2(CONCAT('k', {x}), 256), 16),
  (CRC32(CONCAT('a', {x})) % 100000000) / 100,
  LEFT(CONCAT(SHA2(CONCAT('p', {x}), 256), SHA2(CONCAT('q', {x}), 256)),
       100 + CRC32(CONCAT('l', {x})) % 21),
  TIMESTAMPADD(MICROSECOND, CRC32(CONCAT('c', {x})) * 36718, '2020-01-01 00:00:00')"""


class BenchError(Exception):
    """A failure that ends the benchmark with a one-line reason."""


def q(name):
    """A quoted identifier."""
    return "`" + name.replace("`", "``") + "`"


class Server:
    """Connection details of the topology's primary (and replica), from e2e/db/topology.sh env."""

    def __init__(self, env=os.environ):
        host, _, port = env["GHOST_TEST_PRIMARY"].rpartition(":")
        self.host, self.port = host, int(port)
        self.admin = (env["GHOST_TEST_ADMIN_USER"], env["GHOST_TEST_ADMIN_PASSWORD"])
        self.ghost_user = (env["GHOST_TEST_USER"], env["GHOST_TEST_PASSWORD"])
        replica = env.get("GHOST_TEST_REPLICA", "")
        self.replica = None
        if replica:
            rhost, _, rport = replica.rpartition(":")
            self.replica = (rhost, int(rport))
        self.tls_ca = os.path.join(env.get("GHOST_TEST_TLS_DIR", ""), "ca.pem")
        # MySQL's caching_sha2_password needs TLS (or the cryptography package) for a first
        # login; decided on the first connection and kept.
        self.use_tls = None
        self.warned_replica = False

    def connect(self, database=DATABASE, host=None, port=None, read_timeout=120):
        kwargs = dict(
            host=host or self.host,
            port=port or self.port,
            user=self.admin[0],
            password=self.admin[1],
            database=database,
            autocommit=True,
            charset="utf8mb4",
            connect_timeout=10,
            read_timeout=read_timeout,
            write_timeout=read_timeout,
        )
        if self.use_tls is None:
            try:
                conn = pymysql.connect(**kwargs)
                self.use_tls = False
                return conn
            except Exception:  # noqa: BLE001 - retried over TLS; a real error repeats there
                self.use_tls = True
        if self.use_tls:
            kwargs["ssl"] = {"ca": self.tls_ca, "check_hostname": False}
        return pymysql.connect(**kwargs)


def query(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def scalar(conn, sql, args=None):
    rows = query(conn, sql, args)
    return rows[0][0] if rows else None


def is_mariadb(conn):
    return "mariadb" in scalar(conn, "SELECT VERSION()").lower()


# The topology's servers are sized for tests (128 MiB buffer pool, a 16 MiB redo log); the figures
# come from a primary sized like a production one, as the measurements were. Set for
# the run, restored after it.
GIB = 1024 ** 3


def server_settings(conn, buffer_pool_bytes):
    """The variables to set: the buffer pool, and the redo log's size under its server's name."""
    redo = "innodb_log_file_size" if is_mariadb(conn) else "innodb_redo_log_capacity"
    return {"innodb_buffer_pool_size": buffer_pool_bytes, redo: GIB}


def tune_server(server, buffer_pool_bytes):
    """Applies `server_settings`; returns the previous values (for `restore_server`)."""
    conn = server.connect(database=None)
    try:
        wanted = server_settings(conn, buffer_pool_bytes)
        saved = {name: scalar(conn, f"SELECT @@global.{name}") for name in wanted}
        for name, value in wanted.items():
            try:
                query(conn, f"SET GLOBAL {name} = {int(value)}")
            except pymysql.MySQLError as e:
                # e.g. a buffer pool above innodb_buffer_pool_size_max: the run goes on, and the
                # results record the values it had.
                print(f"bench: warning: SET GLOBAL {name}: {e}", file=sys.stderr)
        during = {name: scalar(conn, f"SELECT @@global.{name}") for name in wanted}
        return {"before": saved, "during": during}
    finally:
        conn.close()


def restore_server(server, saved):
    conn = server.connect(database=None)
    try:
        for name, value in saved.items():
            query(conn, f"SET GLOBAL {name} = {int(value)}")
    finally:
        conn.close()


def create_database(server):
    conn = server.connect(database=None)
    try:
        query(conn, f"DROP DATABASE IF EXISTS {q(DATABASE)}")
        query(conn, f"CREATE DATABASE {q(DATABASE)}")
        return scalar(conn, "SELECT VERSION()")
    finally:
        conn.close()


def drop_database(server):
    conn = server.connect(database=None, read_timeout=60)
    try:
        query(conn, f"DROP DATABASE IF EXISTS {q(DATABASE)}")
    finally:
        conn.close()


def fill_pristine(server, rows):
    """(Re)creates the pristine table with ids 1..rows, doubling from one seed row."""
    conn = server.connect()
    try:
        query(conn, f"DROP TABLE IF EXISTS {q(PRISTINE)}")
        query(conn, CREATE_TABLE.format(name=PRISTINE))
        query(conn, f"INSERT INTO {q(PRISTINE)} ({COLUMNS}) SELECT {ROW_EXPRESSIONS.format(x='1')}")
        have = 1
        while have < rows:
            n = min(have, rows - have, FILL_BATCH)
            # Explicit ids: INSERT ... SELECT may leave auto-increment gaps, the doubling needs none.
            query(
                conn,
                f"INSERT INTO {q(PRISTINE)} ({COLUMNS}) "
                f"SELECT {ROW_EXPRESSIONS.format(x=f'(`id` + {have})')} "
                f"FROM {q(PRISTINE)} WHERE `id` <= {n}",
            )
            have += n
        count = scalar(conn, f"SELECT COUNT(*) FROM {q(PRISTINE)}")
        if count != rows:
            raise BenchError(f"pristine table has {count} rows, wanted {rows}")
        return count
    finally:
        conn.close()


def ghost_tables(table=TABLE):
    """The tables a ghost run of `table` creates (gh-ost's names)."""
    return [f"_{table}_gho", f"_{table}_ghc", f"_{table}_del"]


def fresh_copy(server, rows):
    """Drops the last run's table (and any leftover ghost table) and copies the pristine one."""
    conn = server.connect()
    try:
        for name in [TABLE] + ghost_tables():
            query(conn, f"DROP TABLE IF EXISTS {q(name)}")
        query(conn, f"CREATE TABLE {q(TABLE)} LIKE {q(PRISTINE)}")
        for lo in range(1, rows + 1, FILL_BATCH):
            query(
                conn,
                f"INSERT INTO {q(TABLE)} SELECT * FROM {q(PRISTINE)} "
                f"WHERE `id` BETWEEN {lo} AND {lo + FILL_BATCH - 1}",
            )
        wait_for_replica(server, conn)
        # Warm the buffer pool the same way before every run.
        return scalar(conn, f"SELECT COUNT(*) FROM {q(TABLE)}")
    finally:
        conn.close()


def wait_for_replica(server, conn, timeout=900):
    """Waits until the replica has applied the copy: its catching up would otherwise compete
    with the next run for the CPU. Skipped (with one warning) when the replica is unreachable."""
    if server.replica is None:
        return
    try:
        mariadb = is_mariadb(conn)
        position = scalar(conn, "SELECT @@gtid_binlog_pos" if mariadb else "SELECT @@gtid_executed")
        replica = server.connect(database=None, host=server.replica[0], port=server.replica[1],
                                 read_timeout=timeout + 30)
        try:
            t0 = time.monotonic()
            if mariadb:
                timed_out = scalar(replica, "SELECT MASTER_GTID_WAIT(%s, %s)", (position, timeout)) != 0
            else:
                timed_out = scalar(replica, "SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)",
                                   (position, timeout)) != 0
            if timed_out:
                print(f"bench: warning: the replica did not catch up in {time.monotonic() - t0:.0f} s")
        finally:
            replica.close()
    except pymysql.MySQLError as e:
        if not server.warned_replica:
            print(f"bench: warning: not waiting for the replica ({e.args[-1]})")
            server.warned_replica = True


def table_count(server, table=TABLE):
    conn = server.connect()
    try:
        return scalar(conn, f"SELECT COUNT(*) FROM {q(table)}")
    finally:
        conn.close()


def has_column(server, column, table=TABLE):
    conn = server.connect()
    try:
        return bool(scalar(
            conn,
            "SELECT COUNT(*) FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND COLUMN_NAME = %s",
            (DATABASE, table, column),
        ))
    finally:
        conn.close()


def offline_alter(server, alter):
    """The blocking baseline: the same change as one ALTER TABLE ... ALGORITHM=COPY. Seconds."""
    conn = server.connect(read_timeout=24 * 3600)
    try:
        t0 = time.monotonic()
        query(conn, f"ALTER TABLE {q(TABLE)} {alter}, ALGORITHM=COPY")
        return time.monotonic() - t0
    finally:
        conn.close()
