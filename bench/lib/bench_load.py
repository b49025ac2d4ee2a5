"""Write load while a migration runs: a paced mixed writer, a tight insert loop whose
acknowledgement times expose the write stall at cut-over, and a multi-row updater for the
sustained-rate ramp. Each counts what the server acknowledged (affected rows), so the migrated
table's row count can be checked afterwards.
"""

import array
import random
import threading
import time

import pymysql

from bench_db import TABLE, q

T = q(TABLE)


class IdAllocator:
    """New primary keys for inserts and key-changing updates, shared by every writer: explicit
    ids never collide with each other (auto-increment would, once an UPDATE moved a key past it)."""

    def __init__(self, first):
        self._next = first
        self._lock = threading.Lock()

    def take(self):
        with self._lock:
            value = self._next
            self._next += 1
            return value

    def high(self):
        return self._next - 1


def random_row(rng):
    payload = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=rng.randint(100, 120)))
    return (
        rng.randint(0, 999_999),
        "%016x" % rng.getrandbits(64),
        round(rng.uniform(0, 999_999), 2),
        payload,
    )


INSERT = f"INSERT INTO {T} (`id`, `score`, `code`, `amount`, `payload`, `created`) VALUES (%s, %s, %s, %s, %s, NOW(6))"


class Writer:
    """A thread around one connection; subclasses implement step(). Counters are per writer and
    only read once the writer stopped (or approximately, for rates)."""

    def __init__(self, server, name):
        self.server, self.name = server, name
        self.stop_event = threading.Event()
        self.thread = None
        self.statements = 0
        self.errors = 0
        self.ambiguous = 0  # connection lost mid-statement: the outcome is unknown
        self.last_error = ""
        self.conn = None

    def start(self):
        self.conn = self.server.connect()
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()

    def stop(self):
        self.stop_event.set()
        if self.thread:
            self.thread.join(timeout=120)
        if self.conn:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
            self.conn = None

    def execute(self, sql, args):
        """Runs one autocommit statement; returns its affected rows, or None if it failed."""
        try:
            with self.conn.cursor() as cur:
                affected = cur.execute(sql, args)
            self.statements += 1
            return affected
        except pymysql.err.OperationalError as e:
            self._error(e)
            if e.args and e.args[0] in (2006, 2013, 2055):
                self.ambiguous += 1
                self.conn = self.server.connect()
            return None
        except pymysql.MySQLError as e:
            self._error(e)
            return None

    def _error(self, e):
        self.errors += 1
        self.last_error = str(e)[:200]

    def _run(self):
        while not self.stop_event.is_set():
            self.step()

    def step(self):
        raise NotImplementedError


class Pacer:
    """Spreads statements evenly at `rate` per second; never bursts to catch up more than 1 s."""

    def __init__(self, rate):
        self.rate = rate
        self.next_at = time.monotonic()

    def wait(self, stop_event):
        now = time.monotonic()
        if self.next_at < now - 1.0:
            self.next_at = now
        if self.next_at > now:
            stop_event.wait(self.next_at - now)
        self.next_at += 1.0 / self.rate


class MixedWriter(Writer):
    """40% inserts, 40% updates (a quarter of them change the primary key), 20% deletes, of
    random ids, at a fixed statement rate."""

    def __init__(self, server, name, rate, ids, seed):
        super().__init__(server, name)
        self.pacer = Pacer(rate)
        self.ids = ids
        self.rng = random.Random(seed)
        self.inserted = self.updated = self.moved = self.deleted = 0

    def step(self):
        self.pacer.wait(self.stop_event)
        if self.stop_event.is_set():
            return
        rng, r = self.rng, self.rng.random()
        some_id = rng.randint(1, max(1, self.ids.high()))
        if r < 0.4:
            self.inserted += self.execute(INSERT, (self.ids.take(), *random_row(rng))) or 0
        elif r < 0.5:
            # The key moves: the migration must turn it into a delete and an insert.
            new_id = self.ids.take()
            self.moved += self.execute(f"UPDATE {T} SET `id` = %s WHERE `id` = %s", (new_id, some_id)) or 0
        elif r < 0.8:
            score, _, amount, payload = random_row(rng)
            self.updated += self.execute(
                f"UPDATE {T} SET `score` = %s, `amount` = %s, `payload` = %s WHERE `id` = %s",
                (score, amount, payload, some_id),
            ) or 0
        else:
            self.deleted += self.execute(f"DELETE FROM {T} WHERE `id` = %s", (some_id,)) or 0

    def summary(self, seconds):
        return {
            "statements": self.statements,
            "statementsPerSecond": round(self.statements / seconds, 1) if seconds > 0 else None,
            "inserted": self.inserted,
            "updated": self.updated,
            "keyMoved": self.moved,
            "deleted": self.deleted,
            "errors": self.errors,
            "ambiguous": self.ambiguous,
            "lastError": self.last_error,
        }


class InsertLoop(Writer):
    """Autocommit INSERTs back to back on one connection; keeps every acknowledgement's time
    (seconds since `origin`) to find the longest gap, i.e. the stall a client sees."""

    def __init__(self, server, name, ids, origin, seed):
        super().__init__(server, name)
        self.ids = ids
        self.origin = origin
        self.rng = random.Random(seed)
        self.acks = array.array("d")
        self.inserted = 0
        self.started_at = None

    def start(self):
        self.started_at = time.monotonic() - self.origin
        super().start()

    def step(self):
        affected = self.execute(INSERT, (self.ids.take(), *random_row(self.rng)))
        if affected:
            self.inserted += affected
            self.acks.append(time.monotonic() - self.origin)

    def longest_gap(self, since=None, until=None):
        """Longest time between consecutive acknowledgements (the first counted from the loop's
        start) whose later one falls in [since, until]; seconds, or None without any."""
        previous, best = self.started_at, None
        for t in self.acks:
            if (since is None or t >= since) and (until is None or t <= until):
                gap = t - previous
                best = gap if best is None or gap > best else best
            previous = t
        return best

    def summary(self):
        return {
            "inserted": self.inserted,
            "startedAt": self.started_at,
            "errors": self.errors,
            "ambiguous": self.ambiguous,
            "lastError": self.last_error,
        }


class RangeUpdater(Writer):
    """UPDATEs of `span` consecutive ids in this writer's slice of the table: one statement makes
    `span` row events, so a few connections reach tens of thousands of row events per second.
    The target rate (row events per second for this writer) can change while it runs."""

    def __init__(self, server, name, lo, hi, span, seed):
        super().__init__(server, name)
        self.lo, self.hi = lo, hi
        self.span = max(1, min(span, hi - lo + 1))
        self.rng = random.Random(seed)
        self.rows = 0
        self.pacer = None

    def set_rate(self, rows_per_second):
        self.pacer = Pacer(max(rows_per_second / self.span, 0.1))

    def step(self):
        if self.pacer is None:
            self.stop_event.wait(0.05)
            return
        self.pacer.wait(self.stop_event)
        if self.stop_event.is_set():
            return
        a = self.rng.randint(self.lo, self.hi - self.span + 1)
        # `amount` carries no index: the cost is the row change and its binlog event, which
        # is what the migration has to keep up with.
        self.rows += self.execute(
            f"UPDATE {T} SET `amount` = `amount` + 1 WHERE `id` BETWEEN %s AND %s",
            (a, a + self.span - 1),
        ) or 0


def start_range_updaters(server, rows, connections=4, span=100):
    """Splits ids 1..rows into `connections` slices, one updater each, all idle until set_rate."""
    slice_size = max(1, rows // connections)
    updaters = []
    for i in range(connections):
        lo = 1 + i * slice_size
        hi = rows if i == connections - 1 else lo + slice_size - 1
        w = RangeUpdater(server, f"range-{i}", lo, hi, span, seed=1000 + i)
        w.start()
        updaters.append(w)
    return updaters
