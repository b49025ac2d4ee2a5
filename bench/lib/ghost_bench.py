"""ghost's benchmark, started by bench/run (which sets up the database, the venv and the binary).

Modes (MODE):
  compare    offline ALTER vs ghost `defaults` vs `baseline` (every speed option off, i.e.
             gh-ost's behaviour), idle and under write load, ROUNDS interleaved rounds
  sustained  the highest binlog row-event rate applied with heartbeat lag < 1 s
  scaling    offline vs ghost defaults (idle) for each table size in SIZES
Results go to OUT: results.json, results.md and a PNG.
"""

import datetime
import os
import platform
import signal
import sys
import time
import traceback

from bench_db import (GIB, BenchError, Server, create_database, drop_database, fill_pristine,
                      restore_server, tune_server)
from bench_engine import SPEED_OPTIONS_OFF, ghost_version, supported_options
from bench_report import (FIGURES, SCALING_FIGURES, aggregate, ensure_dir, markdown_table,
                          scaling_plot, sustained_plot, timeline_plot, write_json, write_text)
from bench_runs import run_ghost, run_offline
import bench_sustained

SCALING_VARIANTS = ["offline", "defaults"]
CELLS = "Cells: min / median / max over the rounds (one value when they agree); – not measured."
DEFAULT_STEPS = "1000 2000 4000 6000 8000 10000 12000 15000 20000 25000 30000"
# Environment variables that shape a run, recorded in results.json (never a password).
RECORDED_ENV = ["MODE", "ROWS", "RATE", "ROUNDS", "HOLD", "SIZES", "STEPS", "OUT",
                "GHOST_BENCH_SERVER", "GHOST_BIN", "VARIANTS", "LOADS", "BUFFER_POOL_GIB"]


class Config:
    def __init__(self, env=os.environ):
        self.mode = env.get("MODE", "compare")
        if self.mode not in ("compare", "sustained", "scaling"):
            raise BenchError(f"MODE={self.mode}: expected compare, sustained or scaling")
        self.rows = positive(env, "ROWS", "1000000", int)
        self.rate = positive(env, "RATE", "500", float)
        self.rounds = positive(env, "ROUNDS", "3", int)
        self.hold = positive(env, "HOLD", "30", float)
        self.sizes = int_list(env, "SIZES", "100000 1000000 5000000")
        self.steps = int_list(env, "STEPS", DEFAULT_STEPS)
        cache = env.get("GHOST_CACHE_DIR") or os.path.expanduser("~/.cache/ghost")
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.out = env.get("OUT") or os.path.join(cache, "bench", stamp)
        self.server_name = env.get("GHOST_BENCH_SERVER", "mariadb-10.11")
        self.ghost_bin = env["GHOST_BIN"]
        self.buffer_pool_gib = positive(env, "BUFFER_POOL_GIB", "2", float)
        self.extra_variants = named_flag_sets(env.get("VARIANTS", ""))
        self.loads = env.get("LOADS", "idle load").split()
        if not self.loads or any(load not in ("idle", "load") for load in self.loads):
            raise BenchError(f"LOADS={env.get('LOADS')}: expected idle, load or both")

    def compare_variants(self):
        """offline (idle only), defaults, baseline and the VARIANTS, each under LOADS."""
        ghost = ["defaults", "baseline", *self.extra_variants]
        return [("offline", ["idle"])] + [(name, self.loads) for name in ghost]


def named_flag_sets(text):
    """VARIANTS="name=--flag=x --flag2=y; other=--flag=z" as {name: [flags]}."""
    sets = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, flags = part.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier() or name in ("offline", "defaults", "baseline"):
            raise BenchError(f"VARIANTS: '{part}': expected name=--flag=value ... "
                             "(names other than offline, defaults, baseline)")
        sets[name] = flags.split()
    return sets


def positive(env, name, default, kind):
    raw = env.get(name) or default
    try:
        value = kind(raw)
    except ValueError:
        raise BenchError(f"{name}={raw}: not a number") from None
    if value <= 0:
        raise BenchError(f"{name}={raw}: must be positive")
    return value


def int_list(env, name, default):
    raw = env.get(name) or default
    try:
        values = [int(x) for x in raw.replace(",", " ").split()]
    except ValueError:
        raise BenchError(f"{name}={raw}: expected whole numbers") from None
    if not values or min(values) <= 0:
        raise BenchError(f"{name}={raw}: expected positive whole numbers")
    return values


class Context:
    """What every mode shares, and what cleanup must undo."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.server = Server()
        self.ghost_bin = cfg.ghost_bin
        self.out = ensure_dir(cfg.out)
        self.speed_off = supported_options(cfg.ghost_bin)
        self.active = []  # GhostRun children still to reap
        self.writers = []  # load threads still to stop
        self.flag_files = []
        self.machine = {}
        self.restore_settings = None  # server variables to put back at the end

    def cleanup(self):
        for w in list(self.writers):
            w.stop()
        for run in list(self.active):
            run.terminate()
        for path in self.flag_files:
            if os.path.exists(path):
                os.remove(path)
        try:
            drop_database(self.server)
        except Exception as e:  # noqa: BLE001 - report, do not mask the original failure
            print(f"bench: warning: could not drop database `bench`: {e}", file=sys.stderr)
        if self.restore_settings:
            try:
                restore_server(self.server, self.restore_settings)
            except Exception as e:  # noqa: BLE001 - as above
                print(f"bench: warning: could not restore the server's settings: {e}",
                      file=sys.stderr)


def describe_machine(ctx, server_version):
    return {
        "nproc": os.cpu_count(),
        "loadavgAtStart": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "server": ctx.cfg.server_name,
        "serverVersion": server_version,
        "ghostVersion": ghost_version(ctx.ghost_bin),
        "ghostBinary": ctx.ghost_bin,
        "command": "bash bench/run",
        "env": {k: os.environ[k] for k in RECORDED_ENV if k in os.environ},
        "speedOptionsOff": ctx.speed_off,
        "speedOptionsMissing": [k for k in SPEED_OPTIONS_OFF if k not in ctx.speed_off],
        "startedAt": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def short(record):
    f = record["figures"]
    parts = [f"{f['wall_s']:.2f} s"]
    if f.get("copy_s") is not None:
        parts.append(f"copy {f['copy_s']:.1f} s")
    if f.get("stall_at_cut_over_ms") is not None:
        parts.append(f"insert stall at cut-over {f['stall_at_cut_over_ms']:.0f} ms")
    if f.get("lock_ms") is not None:
        parts.append(f"lock {f['lock_ms']} ms")
    return ", ".join(parts)


def one_run(ctx, variant, load, rows, rnd, extra=None):
    if variant == "offline":
        return run_offline(ctx, rows, rnd, extra)
    return run_ghost(ctx, variant, load, rows, rnd, extra)


def median_run(runs):
    ordered = sorted(runs, key=lambda r: r["figures"]["wall_s"])
    return ordered[(len(ordered) - 1) // 2]


def mode_compare(ctx, results):
    cfg = ctx.cfg
    print(f"bench: filling {cfg.rows} rows")
    fill_pristine(ctx.server, cfg.rows)
    runs = results["runs"] = []
    for rnd in range(1, cfg.rounds + 1):
        for variant, loads in cfg.compare_variants():
            for load in loads:
                record = one_run(ctx, variant, load, cfg.rows, rnd)
                runs.append(record)
                print(f"round {rnd}/{cfg.rounds} {variant:>8} {load:<4}: {short(record)}")
    keys = [k for k, _ in FIGURES]
    aggs = aggregate(runs, ["variant", "load"], keys, lambda e, ref: ref["variant"] == "offline")
    results["aggregates"] = aggs
    title = (f"{cfg.rows} rows, {cfg.rounds} round(s), RATE={cfg.rate:g}/s, "
             f"{cfg.server_name}, {os.cpu_count()} CPUs")
    table = markdown_table(aggs, ["variant", "load"], keys, "wall / offline (median)")
    panels = []
    for variant, loads in cfg.compare_variants()[1:]:
        for load in loads:
            r = median_run([x for x in runs if x["variant"] == variant and x["load"] == load])
            marks = []
            if r.get("insertLoopStartedAt") is not None:
                marks.append((r["insertLoopStartedAt"], "insert loop"))
            if r.get("cutOverSeenAt") is not None:
                marks.append((r["cutOverSeenAt"], "cut-over"))
            panels.append({"title": f"{variant} / {load} (round {r['round']}, "
                                    f"{r['figures']['wall_s']:.1f} s)",
                           "samples": r["samples"], "spans": r["spans"], "marks": marks})
    png = os.path.join(ctx.out, "timeline.png")
    timeline_plot(png, panels, f"ghost migrations: {title}")
    return f"# ghost benchmark: compare\n\n{title}. {CELLS}\n\n{table}\n", png


def mode_scaling(ctx, results):
    cfg = ctx.cfg
    runs = results["runs"] = []
    for rows in cfg.sizes:
        print(f"bench: filling {rows} rows")
        fill_pristine(ctx.server, rows)
        for rnd in range(1, cfg.rounds + 1):
            for variant in SCALING_VARIANTS:
                record = one_run(ctx, variant, "idle", rows, rnd, extra={"size": rows})
                runs.append(record)
                print(f"{rows} rows round {rnd}/{cfg.rounds} {variant:>8}: {short(record)}")
    aggs = aggregate(runs, ["size", "variant"], SCALING_FIGURES,
                     lambda e, ref: ref["size"] == e["size"] and ref["variant"] == "offline")
    for e in aggs:
        e["rows"] = e["size"]
    results["aggregates"] = aggs
    title = f"{cfg.rounds} round(s), idle, {cfg.server_name}, {os.cpu_count()} CPUs"
    table = markdown_table(aggs, ["size", "variant"], SCALING_FIGURES, "wall / offline (median)")
    png = os.path.join(ctx.out, "scaling.png")
    scaling_plot(png, aggs, f"wall time by table size: {title}")
    return f"# ghost benchmark: scaling\n\n{title}. {CELLS}\n\n{table}\n", png


def mode_sustained(ctx, results):
    """A ramp with ghost's defaults, then one per VARIANTS entry, on the same table."""
    cfg = ctx.cfg
    print(f"bench: filling {cfg.rows} rows")
    fill_pristine(ctx.server, cfg.rows)
    title = (f"sustained apply rate: {cfg.rows} rows, {cfg.hold:g} s per step, "
             f"{cfg.server_name}, {os.cpu_count()} CPUs")
    text = [f"# ghost benchmark: sustained\n\n{title}\n"]
    first_png = None
    for name, flags in [("defaults", []), *cfg.extra_variants.items()]:
        print(f"bench: {name}: ramping the write rate, {cfg.hold:g} s per step")
        result = bench_sustained.run_sustained(ctx, cfg.rows, name, flags)
        if name == "defaults":
            results["sustained"] = result
        else:
            results.setdefault("sustainedVariants", {})[name] = result
        suffix = "" if name == "defaults" else f"-{name}"
        png = os.path.join(ctx.out, f"timeline{suffix}.png")
        sustained_plot(png, result["series"], result["steps"], f"{title}: {name}")
        first_png = first_png or png
        shown = " ".join(flags) or "ghost's defaults"
        text.append(f"## {name} ({shown})\n\n{bench_sustained.markdown(result)}\n")
    return "\n".join(text), first_png


MODES = {"compare": mode_compare, "sustained": mode_sustained, "scaling": mode_scaling}


def interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    try:
        cfg = Config()
        ctx = Context(cfg)
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    results = {"mode": cfg.mode}
    rc, t0 = 0, time.monotonic()
    try:
        server_version = create_database(ctx.server)
        results["machine"] = describe_machine(ctx, server_version)
        tuned = tune_server(ctx.server, int(cfg.buffer_pool_gib * GIB))
        ctx.restore_settings = tuned["before"]
        results["machine"]["serverSettings"] = tuned["during"]
        markdown, png = MODES[cfg.mode](ctx, results)
        results["elapsedSeconds"] = round(time.monotonic() - t0, 1)
        write_text(os.path.join(ctx.out, "results.md"), markdown)
        print()
        print(markdown)
        print(f"results: {os.path.join(ctx.out, 'results.json')}")
        print(f"         {os.path.join(ctx.out, 'results.md')}")
        print(f"         {png}")
    except BenchError as e:
        results["error"] = str(e)
        print(f"bench: {e}", file=sys.stderr)
        rc = 1
    except KeyboardInterrupt:
        results["error"] = "interrupted"
        print("bench: interrupted; cleaning up", file=sys.stderr)
        rc = 130
    except Exception as e:  # noqa: BLE001 - one line here, the traceback in OUT
        results["error"] = f"{type(e).__name__}: {e}"
        with open(os.path.join(ctx.out, "traceback.txt"), "w") as f:
            traceback.print_exc(file=f)
        print(f"bench: {type(e).__name__}: {e} (traceback in {ctx.out}/traceback.txt)",
              file=sys.stderr)
        rc = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let cleanup finish
        ctx.cleanup()
        write_json(os.path.join(ctx.out, "results.json"), results)
    return rc


if __name__ == "__main__":
    sys.exit(main())
