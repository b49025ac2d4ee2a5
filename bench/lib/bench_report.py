"""Aggregates (min/median/max per group), the Markdown table, results.json and the PNGs."""

import json
import os
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen
from matplotlib.patches import Patch  # noqa: E402

# Per-run figures of compare mode: (key, column heading). Scaling uses a subset.
FIGURES = [
    ("wall_s", "wall s"),
    ("copy_s", "copy s"),
    ("copy_rows_per_s", "copy rows/s"),
    ("apply_events_per_s", "apply events/s"),
    ("checksum_s", "checksum s"),
    ("lag_p99_ms", "lag p99 ms"),
    ("lag_max_ms", "lag max ms"),
    ("stall_at_cut_over_ms", "insert stall at cut-over ms"),
    ("longest_insert_gap_ms", "longest insert gap ms"),
    ("cpu_s", "engine CPU s"),
    ("rss_mib", "peak RSS MiB"),
    ("lock_ms", "cut-over lock ms"),
]
SCALING_FIGURES = ["wall_s", "copy_s", "copy_rows_per_s", "checksum_s", "cpu_s", "rss_mib"]

PHASE_COLOURS = {
    "Pending": "#bbbbbb",
    "Validating": "#999999",
    "Copying": "#4c9be8",
    "Indexing": "#9b6bd6",
    "Verifying": "#f2b134",
    "Postponed": "#7fc97f",
    "CuttingOver": "#e8504c",
    "Succeeded": "#2ca02c",
    "Failed": "#000000",
    "Cancelled": "#555555",
}


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def aggregate(runs, keys, figure_keys, reference):
    """Groups runs by `keys`; each figure as min/median/max, and the median wall time over the
    median wall time of the group for which reference(group) says True in the same
    (other-keys) context, e.g. offline."""
    groups = {}
    for run in runs:
        groups.setdefault(tuple(run[k] for k in keys), []).append(run)
    out = []
    for group_key, members in groups.items():
        entry = dict(zip(keys, group_key))
        entry["rounds"] = len(members)
        entry["figures"] = {k: stats([m["figures"].get(k) for m in members]) for k in figure_keys}
        out.append(entry)
    for entry in out:
        ref = next((e for e in out if reference(entry, e)), None)
        mine, theirs = entry["figures"].get("wall_s"), ref and ref["figures"].get("wall_s")
        entry["wall_ratio"] = mine["median"] / theirs["median"] if mine and theirs else None
    return out


def fmt(v):
    if v is None:
        return "–"
    if isinstance(v, int) or abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(s):
    if s is None:
        return "–"
    if s["min"] == s["max"]:
        return fmt(s["median"])
    return f"{fmt(s['min'])} / {fmt(s['median'])} / {fmt(s['max'])}"


def markdown_table(aggregates, keys, figure_keys, ratio_heading):
    labels = dict(FIGURES)
    head = keys + [labels[k] for k in figure_keys] + [ratio_heading]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in aggregates:
        ratio = f"{e['wall_ratio']:.2f}×" if e.get("wall_ratio") else "–"
        row = [str(e[k]) for k in keys] + [cell(e["figures"].get(k)) for k in figure_keys] + [ratio]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=1, default=str)
        f.write("\n")


def write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


def phase_bands(ax, spans, seen):
    for phase, start, end in spans:
        colour = PHASE_COLOURS.get(phase, "#dddddd")
        ax.axvspan(start, max(end, start + 0.05), color=colour, alpha=0.18, lw=0)
        seen.setdefault(phase, colour)


def timeline_plot(path, panels, title):
    """One subplot per panel: rows copied and events applied (left axis), heartbeat lag (right),
    phase bands. A panel is {title, samples, spans, marks: [(t, label)]}."""
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 4.2 * rows), squeeze=False)
    seen = {}
    for ax, panel in zip(axes.flat, panels):
        s = panel["samples"]
        t = [x["t"] for x in s]
        phase_bands(ax, panel["spans"], seen)
        ax.plot(t, [x["rowsCopied"] or 0 for x in s], color="#1f5fa8", label="rows copied")
        ax.plot(t, [x["eventsApplied"] or 0 for x in s], color="#d6691e", label="events applied")
        ax.set_xlabel("seconds since start")
        ax.set_ylabel("rows / events")
        ax.ticklabel_format(axis="y", style="plain")
        lag_ax = ax.twinx()
        lag_ax.plot(t, [x["lagMs"] if x["lagMs"] is not None else float("nan") for x in s],
                    color="#c0392b", lw=0.9, ls="--", label="heartbeat lag")
        lag_ax.set_ylabel("heartbeat lag ms")
        lag_ax.set_ylim(bottom=0)
        for when, label in panel.get("marks", []):
            ax.axvline(when, color="#333333", lw=0.8, ls=":")
            ax.annotate(label, (when, 1.0), xycoords=("data", "axes fraction"),
                        fontsize=7, rotation=90, va="top", ha="right")
        ax.set_title(panel["title"], fontsize=10)
        handles = ax.get_legend_handles_labels()[0] + lag_ax.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="best", fontsize=7)
        ax.set_xlim(left=0)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.legend(handles=[Patch(color=c, alpha=0.35, label=p) for p, c in seen.items()],
               loc="lower center", ncol=len(seen), fontsize=8, title="phase", title_fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sustained_plot(path, series, steps, title):
    """Target and achieved row events/s, events applied/s (left), heartbeat lag (right)."""
    fig, ax = plt.subplots(figsize=(11, 5))
    for step in steps:
        ax.hlines(step["target"], step["start"], step["end"], color="#888888", lw=1.5)
    ax.plot([], [], color="#888888", label="target row events/s")
    ax.plot(series["t"], series["writer_rate"], color="#1f5fa8", label="writer row events/s")
    ax.plot(series["t"], series["apply_rate"], color="#d6691e", label="engine events applied/s")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("row events / s")
    lag_ax = ax.twinx()
    lag_ax.plot(series["t"], series["lag"], color="#c0392b", lw=0.9, ls="--", label="heartbeat lag")
    lag_ax.axhline(1000, color="#c0392b", lw=0.6, ls=":")
    lag_ax.set_ylabel("heartbeat lag ms")
    lag_ax.set_ylim(bottom=0)
    handles = ax.get_legend_handles_labels()[0] + lag_ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scaling_plot(path, aggregates, title):
    """Median wall time (min-max bars) against table size, one line per variant."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for variant in sorted({e["variant"] for e in aggregates}):
        points = sorted((e["rows"], e["figures"]["wall_s"]) for e in aggregates
                        if e["variant"] == variant and e["figures"].get("wall_s"))
        x = [p[0] for p in points]
        med = [p[1]["median"] for p in points]
        err = [[m - p[1]["min"] for m, p in zip(med, points)],
               [p[1]["max"] - m for m, p in zip(med, points)]]
        ax.errorbar(x, med, yerr=err, marker="o", capsize=3, label=variant)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows")
    ax.set_ylabel("wall time s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ensure_dir(path):
    os.makedirs(path, exist_ok=True)
    return path
