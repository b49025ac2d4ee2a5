"""Runs `ghost migrate` as a child process, polls its HTTP status and its peak RSS (VmHWM,
sampled) every 200 ms, reaps it with os.wait4 for its CPU time, and turns the samples into
per-run figures.
"""

import datetime
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request

from bench_db import DATABASE, TABLE, BenchError

# ghost's speed options and the value that turns each off, i.e. what gh-ost does. The "baseline"
# variant passes all of them; a new option is one more line here. Options the binary does not
# know are left out (and listed in results.json).
SPEED_OPTIONS_OFF = {
    "checksum": "false",
    "checksum-during-copy": "false",
    "copy-without-locks": "false",
    "defer-secondary-indexes": "false",
    "skip-uncopied-changes": "false",
    "coalesce-changes": "false",
    "copy-threads": "1",
    "apply-threads": "1",
    "target-chunk-time-millis": "0",
    # gh-ost's default; ghost's is 1000.
    "dml-batch-size": "10",
}

ALTER = "ADD COLUMN `note2` VARCHAR(32) NULL"
CHUNK_SIZE = 1000
POLL_SECONDS = 0.2
# Phases whose heartbeat lag counts: the engine is applying the binlog while the table is live.
LAG_PHASES = ("Copying", "Indexing", "Verifying", "Postponed")
DONE_RE = re.compile(r"writes were blocked (\d+) ms at cut-over")
SWAPPED_RE = re.compile(r"^(\S+)Z .*tables swapped blocked_ms=(\d+)")


def supported_options(ghost_bin):
    """The speed options this binary accepts (`--check-flag` exits 0 when all given flags exist)."""
    found = {}
    for flag, off in SPEED_OPTIONS_OFF.items():
        rc = subprocess.run([ghost_bin, "migrate", "--check-flag", f"--{flag}={off}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        if rc == 0:
            found[flag] = off
    return found


def variant_flags(variant, speed_off, extra_variants=None):
    """Extra flags of a ghost variant: `defaults` none, `baseline` every speed option off, a
    name from VARIANTS its own flags."""
    if extra_variants and variant in extra_variants:
        return list(extra_variants[variant])
    if variant == "defaults":
        return []
    if variant == "baseline":
        return [f"--{flag}={value}" for flag, value in speed_off.items()]
    raise ValueError(variant)


def ghost_version(ghost_bin):
    try:
        out = subprocess.run([ghost_bin, "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def phase_of(progress):
    """The engine's phase, with the deferred index build (reported as Copying) told apart."""
    phase = progress.get("phase") or "Unknown"
    if phase == "Copying" and progress.get("message", "").startswith("building the ghost table's"):
        return "Indexing"
    return phase


class GhostRun:
    """One `ghost migrate` child. Samples are dicts with `t` in seconds since the spawn."""

    def __init__(self, ghost_bin, server, flags, log_path, postpone_file=None):
        self.port = free_port()
        user, password = server.ghost_user
        self.argv = [
            ghost_bin, "migrate",
            f"--host={server.host}", f"--port={server.port}",
            f"--user={user}", f"--password={password}",
            "--allow-on-master", f"--database={DATABASE}", f"--table={TABLE}",
            f"--alter={ALTER}", f"--chunk-size={CHUNK_SIZE}",
            "--ok-to-drop-table", "--execute", f"--http-addr=127.0.0.1:{self.port}",
            # Timestamped milestones in the log (a few lines per run) explain outliers.
            "--verbose",
        ] + list(flags)
        if postpone_file:
            self.argv.append(f"--postpone-cut-over-flag-file={postpone_file}")
        self.password = password
        self.log_path = log_path
        self.samples = []
        self.on_sample = []  # callables(sample), run on the poller thread
        self.proc = None
        self.t0 = None
        # The wall clock at t0: the engine's log lines carry wall-clock timestamps.
        self.wall0 = None
        self.t_exit = None
        self.rc = None
        self.rusage = None
        # Peak RSS from the engine's own VmHWM: wait4's ru_maxrss also counts the forked Python
        # interpreter before exec (Linux keeps that peak across execve), ~70 MiB of it.
        self.peak_rss_kib = None
        self._stop = threading.Event()
        self._poller = None

    def redacted_argv(self):
        return [a.replace(self.password, "***") if a.startswith("--password=") else a
                for a in self.argv]

    def start(self):
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        with open(self.log_path, "wb") as log:
            # A session of its own: Ctrl-C reaches only the benchmark, whose cleanup stops the
            # engine with SIGTERM (ghost then drops its tables).
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self._poller = threading.Thread(target=self._poll, name="poller", daemon=True)
        self._poller.start()

    def _poll(self):
        url = f"http://127.0.0.1:{self.port}/api/status"
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    status = json.load(r)
                self._record(status)
            except (OSError, ValueError):
                pass  # not listening yet, or gone
            self._read_peak_rss()
            next_at += POLL_SECONDS
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _read_peak_rss(self):
        if self.rc is not None:
            return  # reaped: the pid may be another process's now
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        kib = int(line.split()[1])
                        self.peak_rss_kib = max(self.peak_rss_kib or 0, kib)
        except (OSError, ValueError, AttributeError):
            pass  # not started yet, or gone

    def _record(self, status):
        p = status.get("progress", {})
        cut = p.get("cutOver") or {}
        sample = {
            "t": round(time.monotonic() - self.t0, 3),
            "phase": phase_of(p),
            "percent": p.get("percent"),
            "rowsCopied": p.get("rowsCopied"),
            "rowsEstimate": p.get("rowsEstimate"),
            "eventsApplied": p.get("eventsApplied"),
            "backlog": p.get("backlog"),
            "lagMs": p.get("heartbeatLagMillis"),
            "throttled": bool((p.get("throttle") or {}).get("active")),
            "cutOverAttempts": cut.get("attempts"),
            "lockMs": cut.get("lockMillis"),
            "message": p.get("message", "")[:120],
        }
        self.samples.append(sample)
        for callback in self.on_sample:
            callback(sample)

    def alive(self):
        # Not Popen.poll(): it would reap the child and lose its rusage.
        return self.proc is not None and self.rc is None and self.wait(timeout=0) is None

    def wait(self, timeout=None):
        """Reaps the child (os.wait4 gives its rusage); returns the exit code, or None if it is
        still running after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            flags = 0 if deadline is None else os.WNOHANG
            pid, status, rusage = os.wait4(self.proc.pid, flags)
            if pid:
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)
        self.t_exit = time.monotonic() - self.t0
        self.rc = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.rc  # reaped here: keep Popen from waiting again
        self.rusage = rusage
        self._stop.set()
        self._poller.join(timeout=5)
        return self.rc

    def terminate(self):
        """Stops a still running engine: SIGTERM (it aborts and drops its tables), then SIGKILL."""
        if self.proc is None or self.rc is not None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(timeout=60) is None:
                self.proc.kill()
                self.wait()
        except ProcessLookupError:
            pass

    def log_tail(self, lines=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read().splitlines()[-lines:]
        except OSError:
            return []

    def failure_reason(self):
        """ghost prints its cause on one `ghost migrate: ...` line; else the log's last line."""
        tail = self.log_tail(50)
        for line in reversed(tail):
            if line.startswith("ghost migrate:"):
                return line.strip()
        return tail[-1].strip() if tail else f"exit code {self.rc}"

    def lock_ms(self):
        for line in reversed(self.log_tail(50)):
            m = DONE_RE.search(line)
            if m:
                return int(m.group(1))
        locks = [s["lockMs"] for s in self.samples if s.get("lockMs") is not None]
        return locks[-1] if locks else None

    def spans(self):
        """Consecutive samples of one phase as (phase, start, end); a span ends where the next
        begins, the last at the engine's exit."""
        spans = []
        for s in self.samples:
            if spans and spans[-1][0] == s["phase"]:
                continue
            if spans:
                spans[-1][2] = s["t"]
            spans.append([s["phase"], s["t"], s["t"]])
        if spans:
            spans[-1][2] = self.t_exit if self.t_exit is not None else self.samples[-1]["t"]
        return [tuple(s) for s in spans]

    def swap_started_at(self):
        """When the cut-over's lock began, in seconds since the spawn, from the engine's own log
        line `tables swapped blocked_ms=N` (its timestamp less N): a cut-over shorter than a
        poll has no CuttingOver sample. None when the log has no such line."""
        if self.wall0 is None:
            return None
        for line in self.log_tail(200):
            m = SWAPPED_RE.search(line)
            if not m:
                continue
            try:
                at = datetime.datetime.strptime(m.group(1)[:26], "%Y-%m-%dT%H:%M:%S.%f")
            except ValueError:
                return None
            at = at.replace(tzinfo=datetime.timezone.utc).timestamp()
            return at - self.wall0 - int(m.group(2)) / 1000
        return None

    def first_seen(self, phase):
        return next((s["t"] for s in self.samples if s["phase"] == phase), None)

    def figures(self):
        """The per-run figures (None where the samples cannot tell, e.g. a phase shorter than a
        poll)."""
        spans = self.spans()

        def duration(*phases):
            seen = [end - start for phase, start, end in spans if phase in phases]
            return sum(seen) if seen else None

        copy_s = duration("Copying", "Indexing")
        rows = max((s["rowsCopied"] or 0 for s in self.samples), default=0)
        events = max((s["eventsApplied"] or 0 for s in self.samples), default=0)
        first_copy = self.first_seen("Copying")
        lags = sorted(s["lagMs"] for s in self.samples
                      if s["phase"] in LAG_PHASES and s["lagMs"] is not None)
        live_s = self.t_exit - first_copy if first_copy is not None else None
        ru = self.rusage
        return {
            "wall_s": self.t_exit,
            "validate_s": duration("Validating"),
            "copy_s": copy_s,
            "index_build_s": duration("Indexing"),
            "copy_rows_per_s": rows / copy_s if copy_s else None,
            "apply_events_per_s": events / live_s if live_s else None,
            "events_applied": events,
            "checksum_s": duration("Verifying"),
            "lag_p99_ms": percentile(lags, 99),
            "lag_max_ms": lags[-1] if lags else None,
            "cpu_s": ru.ru_utime + ru.ru_stime if ru else None,
            "rss_mib": self.peak_rss_kib / 1024 if self.peak_rss_kib else None,
            "lock_ms": self.lock_ms(),
            "throttled_samples": sum(1 for s in self.samples if s["throttled"]),
        }


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def require_success(run, label):
    if run.rc != 0:
        raise BenchError(f"ghost migrate ({label}) failed: {run.failure_reason()} (log: {run.log_path})")
