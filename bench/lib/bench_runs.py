"""One measured migration each: `offline` (ALTER TABLE ... ALGORITHM=COPY) or a ghost variant,
idle or under load, on a fresh copy of the pristine table; every run ends with a correctness
check of the migrated table."""

import os
import threading
import time

from bench_db import BenchError, fresh_copy, has_column, offline_alter, table_count
from bench_engine import ALTER, GhostRun, require_success, variant_flags
from bench_load import IdAllocator, InsertLoop, MixedWriter

# Phases after the row copy: the tight insert loop must be running by then.
PAST_COPY = ("Verifying", "Postponed", "CuttingOver", "Succeeded")
# Without a CuttingOver sample (a cut-over shorter than a poll), the stall window is the end.
STALL_WINDOW_FALLBACK_S = 5.0
# How long before the swap's lock (from the engine's log) the stall window opens: the insert in
# flight when the lock is taken started before it.
SWAP_WINDOW_LEAD_S = 0.2
MIXED_CONNECTIONS = 2


def check_migrated(ctx, label, expected, unknown=0):
    """Correctness first: the new column is there and no row was lost or duplicated.
    `unknown`: statements whose connection broke mid-flight (their effect is not known)."""
    if not has_column(ctx.server, "note2"):
        raise BenchError(f"{label}: the migrated table has no column `note2`")
    actual = table_count(ctx.server)
    if actual != expected:
        note = f" ({unknown} statements had an unknown outcome)" if unknown else ""
        raise BenchError(f"{label}: the migrated table has {actual} rows, the writers' "
                         f"acknowledged changes leave {expected}{note}")
    return actual


def run_offline(ctx, rows, rnd, extra=None):
    label = f"offline/idle round {rnd}"
    count = fresh_copy(ctx.server, rows)
    wall = offline_alter(ctx.server, ALTER)
    check_migrated(ctx, label, count)
    return dict(extra or {}, variant="offline", load="idle", round=rnd, rows=count,
                figures={"wall_s": wall})


def run_ghost(ctx, variant, load, rows, rnd, extra=None):
    """A ghost migration of a fresh copy; under `load`, with the mixed writer from the start and
    the tight insert loop from 95% of the copy until the engine exits."""
    label = f"{variant}/{load} round {rnd}"
    count = fresh_copy(ctx.server, rows)
    log = os.path.join(ctx.out, f"ghost-{variant}-{load}-{extra_tag(extra)}r{rnd}.log")
    run = GhostRun(ctx.ghost_bin, ctx.server, variant_flags(variant, ctx.speed_off, ctx.cfg.extra_variants), log)
    ctx.active.append(run)
    writers = Load(ctx, count, run) if load == "load" else None
    try:
        run.start()
        if writers:
            writers.start()
        run.wait()
    finally:
        if writers:
            writers.stop()
    require_success(run, label)
    figures = run.figures()
    record = dict(extra or {}, variant=variant, load=load, round=rnd, rows=count,
                  ghostArgv=run.redacted_argv(), log=log, samples=run.samples,
                  spans=run.spans(), cutOverSeenAt=run.first_seen("CuttingOver"))
    expected = count
    if writers:
        expected = count + writers.inserted() - writers.deleted()
        figures.update(writers.gap_figures(run))
        record["writers"] = writers.summary(run.t_exit)
        failed = writers.failed()
        if failed:
            # Failed statements changed nothing, so the count check still holds; worth a look.
            print(f"bench: warning: {label}: {failed[0]} writer statements failed, e.g. {failed[1]}")
        record["insertLoopStartedAt"] = writers.loop.started_at
    record["figures"] = figures
    unknown = sum(w.ambiguous for w in [writers.loop] + writers.mixed) if writers else 0
    record["rowsAfter"] = check_migrated(ctx, label, expected, unknown)
    ctx.active.remove(run)
    return record


def extra_tag(extra):
    return f"{extra['size']}rows-" if extra and "size" in extra else ""


class Load:
    """The writers of one `load` run, started and stopped around the engine."""

    def __init__(self, ctx, count, run):
        self.ids = IdAllocator(count + 1)  # the pristine table holds ids 1..count
        per_connection = ctx.cfg.rate / MIXED_CONNECTIONS
        self.mixed = [MixedWriter(ctx.server, f"mixed-{i}", per_connection, self.ids, seed=i)
                      for i in range(MIXED_CONNECTIONS)]
        self.loop = InsertLoop(ctx.server, "insert-loop", self.ids, origin=0.0, seed=99)
        self.count = count
        self.run = run
        self._lock = threading.Lock()
        self._loop_started = False
        self.ctx = ctx
        run.on_sample.append(self._maybe_start_loop)

    def start(self):
        self.loop.origin = self.run.t0  # ack times in the engine's clock
        for w in self.mixed:
            w.start()
            self.ctx.writers.append(w)

    def _maybe_start_loop(self, sample):
        """Poller callback: the copy is at 95% (by the engine's or our own count) or over."""
        # percent reads 100 before the copy when the estimate is still 0: only trust it copying.
        copying = sample["phase"] in ("Copying", "Indexing")
        due = sample["phase"] in PAST_COPY or copying and (
            (sample.get("percent") or 0) >= 95 or (sample.get("rowsCopied") or 0) >= 0.95 * self.count)
        with self._lock:
            if due and not self._loop_started and sample["phase"] not in ("Failed", "Cancelled"):
                self._loop_started = True
                self.loop.start()
                self.ctx.writers.append(self.loop)

    def stop(self):
        with self._lock:
            self._loop_started = True  # no late start after this
        mine = [self.loop] + self.mixed
        for w in mine:
            w.stop()
        self.ctx.writers[:] = [w for w in self.ctx.writers if w not in mine]

    def inserted(self):
        return self.loop.inserted + sum(w.inserted for w in self.mixed)

    def deleted(self):
        return sum(w.deleted for w in self.mixed)

    def gap_figures(self, run):
        """The client-seen write stall: the longest gap between acknowledged inserts from the
        cut-over's start (or the last seconds) to the engine's exit, and the longest overall."""
        if self.loop.started_at is None:
            return {"stall_at_cut_over_ms": None, "longest_insert_gap_ms": None}
        since = run.first_seen("CuttingOver")
        swap = run.swap_started_at()
        if since is None and swap is not None:
            # A cut-over between two polls: the window opens just before its lock.
            since = max(0.0, swap - SWAP_WINDOW_LEAD_S)
        if since is None:
            since = max(0.0, run.t_exit - STALL_WINDOW_FALLBACK_S)
        stall = self.loop.longest_gap(since=since, until=run.t_exit + 1.0)
        overall = self.loop.longest_gap()
        return {
            "stall_at_cut_over_ms": stall * 1000 if stall is not None else None,
            "longest_insert_gap_ms": overall * 1000 if overall is not None else None,
        }

    def failed(self):
        """(count, one error message) of failed statements, or None."""
        writers = [self.loop] + self.mixed
        count = sum(w.errors for w in writers)
        return (count, next(w.last_error for w in writers if w.errors)) if count else None

    def summary(self, seconds):
        return {
            "mixed": [w.summary(seconds) for w in self.mixed],
            "insertLoop": self.loop.summary(),
            "rate": self.ctx.cfg.rate,
        }


def wait_for_phase(run, phases, timeout):
    """Polls the samples until one of `phases` shows; False if the engine exited or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run.samples and run.samples[-1]["phase"] in phases:
            return True
        if not run.alive():
            return False
        time.sleep(0.1)
    return False
