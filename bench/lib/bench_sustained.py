"""MODE=sustained: the highest row-event rate the engine applies with heartbeat lag under 1 s.

The migration is held in phase Postponed (its row copy done, the binlog still applied) by a
postpone flag file while a writer ramps its rate step by step; the ramp stops at the first step
whose lag p99 reaches 1 s or whose target the writer itself cannot reach.
"""

import os
import time

from bench_db import BenchError, fresh_copy
from bench_engine import GhostRun, percentile, require_success
from bench_load import start_range_updaters
from bench_runs import check_migrated, wait_for_phase

LAG_LIMIT_MS = 1000
# A step whose writer falls short of this share of the target is writer-bound, not engine-bound.
WRITER_SHORTFALL = 0.9
UPDATERS = 4
ROWS_PER_STATEMENT = 100


def run_sustained(ctx, rows, name="defaults", flags=()):
    """One ramp with ghost's defaults plus `flags` (a VARIANTS entry)."""
    count = fresh_copy(ctx.server, rows)
    flag = os.path.join(ctx.out, "postpone-cut-over.flag")
    open(flag, "w").close()
    ctx.flag_files.append(flag)
    log = os.path.join(ctx.out, f"ghost-sustained-{name}.log")
    run = GhostRun(ctx.ghost_bin, ctx.server, list(flags), log, postpone_file=flag)
    ctx.active.append(run)
    updaters = []
    trace = []  # (t, writer rows so far, events applied, lag ms) per poll
    run.on_sample.append(lambda s: trace.append(
        (s["t"], sum(u.rows for u in updaters), s["eventsApplied"] or 0, s["lagMs"])))
    run.start()
    # The copy (and checksum) must finish first; allow ~1000 rows/s at worst.
    if not wait_for_phase(run, ("Postponed",), timeout=300 + count / 1000):
        run.terminate()
        require_success(run, "sustained")
        raise BenchError(f"sustained: the engine never reached phase Postponed (log: {log})")
    updaters.extend(start_range_updaters(ctx.server, count, UPDATERS, ROWS_PER_STATEMENT))
    ctx.writers.extend(updaters)
    try:
        steps, stop_reason = ramp(ctx, run, updaters, trace)
    finally:
        for u in updaters:
            u.stop()
    ctx.writers[:] = [w for w in ctx.writers if w not in updaters]
    os.remove(flag)
    ctx.flag_files.remove(flag)
    # The backlog drains, then the cut-over runs; give it time, but not forever.
    if run.wait(timeout=600) is None:
        run.terminate()
        raise BenchError(f"sustained: the migration did not finish within 600 s of the ramp (log: {log})")
    require_success(run, "sustained")
    errors = sum(u.errors for u in updaters)
    if errors:
        raise BenchError(f"sustained: {errors} writer statements failed: {updaters[0].last_error or '?'}")
    check_migrated(ctx, "sustained", count)  # updates only: the count stays
    ctx.active.remove(run)
    held = [s for s in steps if s["held"]]
    best = max(held, key=lambda s: s["target"]) if held else None
    return {
        "variant": name,
        "rows": count,
        "hold_s": ctx.cfg.hold,
        "steps": steps,
        "stopReason": stop_reason,
        "highestHeld": best,
        "figures": run.figures(),
        "ghostArgv": run.redacted_argv(),
        "log": log,
        "samples": run.samples,
        "spans": run.spans(),
        "series": rate_series(trace),
    }


def ramp(ctx, run, updaters, trace):
    """Runs the steps; returns them and why the ramp stopped."""
    steps = []
    for target in ctx.cfg.steps:
        for u in updaters:
            u.set_rate(target / len(updaters))
        start = time.monotonic() - run.t0
        rows0 = sum(u.rows for u in updaters)
        deadline = time.monotonic() + ctx.cfg.hold
        while time.monotonic() < deadline:
            if not run.alive():
                require_success(run, "sustained")
                raise BenchError("sustained: the engine exited while postponed")
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        end = time.monotonic() - run.t0
        step = measure_step(target, start, end, sum(u.rows for u in updaters) - rows0, trace)
        steps.append(step)
        print(f"  {target:>6} row events/s target: writer {step['achieved']:.0f}/s, engine applied "
              f"{fmt_opt(step['applied'])}/s, lag p99 {fmt_opt(step['lag_p99_ms'])} ms"
              f" max {fmt_opt(step['lag_max_ms'])} ms")
        if step["lag_p99_ms"] is not None and step["lag_p99_ms"] >= LAG_LIMIT_MS:
            return steps, f"heartbeat lag p99 {step['lag_p99_ms']} ms at {target} row events/s"
        if step["achieved"] < WRITER_SHORTFALL * target:
            return steps, (f"the writer reached only {step['achieved']:.0f} of {target} "
                           f"row events/s (writer-bound)")
    return steps, "every step held"


def measure_step(target, start, end, rows, trace):
    window = [x for x in trace if start <= x[0] <= end]
    lags = sorted(x[3] for x in window if x[3] is not None)
    applied = None
    if len(window) >= 2 and window[-1][0] > window[0][0]:
        applied = (window[-1][2] - window[0][2]) / (window[-1][0] - window[0][0])
    achieved = rows / (end - start) if end > start else 0.0
    p99 = percentile(lags, 99)
    return {
        "target": target,
        "start": start,
        "end": end,
        "achieved": achieved,
        "applied": applied,
        "lag_p99_ms": p99,
        "lag_max_ms": lags[-1] if lags else None,
        "held": p99 is not None and p99 < LAG_LIMIT_MS and achieved >= WRITER_SHORTFALL * target,
    }


def rate_series(trace, window=1.0):
    """Per-poll rates over the preceding `window` seconds, for the plot."""
    out = {"t": [], "writer_rate": [], "apply_rate": [], "lag": []}
    j = 0
    for i, (t, rows, events, lag) in enumerate(trace):
        while trace[j][0] < t - window:
            j += 1
        dt = t - trace[j][0]
        out["t"].append(t)
        out["writer_rate"].append((rows - trace[j][1]) / dt if dt > 0 else float("nan"))
        out["apply_rate"].append((events - trace[j][2]) / dt if dt > 0 else float("nan"))
        out["lag"].append(lag if lag is not None else float("nan"))
    return out


def fmt_opt(v):
    return "–" if v is None else f"{v:.0f}"


def markdown(result):
    lines = [
        "| target row events/s | writer row events/s | engine events applied/s | lag p99 ms | lag max ms | held |",
        "|---|---|---|---|---|---|",
    ]
    for s in result["steps"]:
        lines.append(f"| {s['target']} | {s['achieved']:.0f} | {fmt_opt(s['applied'])} | "
                     f"{fmt_opt(s['lag_p99_ms'])} | {fmt_opt(s['lag_max_ms'])} | "
                     f"{'yes' if s['held'] else 'no'} |")
    best = result["highestHeld"]
    held = (f"{best['target']} row events/s (writer achieved {best['achieved']:.0f}/s)"
            if best else "none")
    lines += ["", f"Highest rate held {result['hold_s']:g} s with heartbeat lag < 1 s: {held}.",
              f"Ramp stopped: {result['stopReason']}."]
    return "\n".join(lines)
