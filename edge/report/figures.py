"""The report's figures of edge runs: BottleFit's payload curve and the edge bench's figures.

Edge bench figures colour by mode (local / offload / split) and shade latency stages in
fixed, lighter :data:`STAGE_COLOURS`.
"""

from __future__ import annotations

from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from fedsim.edge.bench_files import BENCH_STAGES
from fedsim.edge.report.data import BenchRun, BenchWorker, EdgeRun
from fedsim.report.data import RunData
from fedsim.report.figures import (
    DPI,
    MARKERS,
    SIZE,
    add_colours,
    colour,
    figure,
    finish,
    new_figure,
    series_label,
)

# BottleFit's method, and the bench's modes (split computing is BottleFit's, hence its colour)
add_colours({"bottlefit": "#9467bd", "local": "#8c564b", "offload": "#ff7f0e", "split": "#9467bd"})
#: latency stages of the edge bench (light shades, apart from the mode colours)
STAGE_COLOURS = {
    "preprocess": "#c7c7c7",
    "head": "#aec7e8",
    "encode": "#ffbb78",
    "serialise": "#98df8a",
    "network": "#ff9896",
    "server_queue": "#dbdb8d",
    "server_decode": "#9edae5",
    "tail": "#c5b0d5",
    "decode": "#f7b6d2",
}


@figure("edge_payload", "Accuracy against payload bytes per C", "edge results.jsonl or evaluate.json", "edge")
def edge_payload(runs: list[RunData]) -> Figure | None:
    """Split accuracy against payload bytes per bottleneck size C; raw-input and JPEG sizes marked."""
    fig, ax = new_figure(
        "Accuracy against payload (per bottleneck channels C)", "payload per image (B)", "accuracy (fraction)"
    )
    drawn = False
    marks: dict[str, float] = {}
    for i, run in enumerate(runs):
        if not isinstance(run, EdgeRun):
            continue
        if run.evaluate and run.evaluate.get("rows"):
            rows = [(r["C"], r["payload_bytes"], r["accuracy"]) for r in run.evaluate["rows"]]
            inp = run.evaluate.get("input") or {}
            for key, name in (("raw_bytes", "raw input"), ("jpeg_bytes", "JPEG")):
                if inp.get(key):
                    marks[name] = float(inp[key])
            teacher = (run.evaluate.get("teacher") or {}).get("accuracy")
        else:
            last: dict[int, dict] = {}
            for r in run.results:
                last[r["C"]] = r
            rows = [
                (c, r["payload_bytes"], r.get("codec_accuracy", r.get("accuracy")))
                for c, r in sorted(last.items())
            ]
            teacher = next((r.get("teacher_accuracy") for r in run.results), None)
        if not rows:
            continue
        rows.sort()
        c = colour(run.method)
        ax.plot(
            [r[1] for r in rows],
            [r[2] for r in rows],
            marker=MARKERS[i % len(MARKERS)],
            color=c,
            label=series_label(run, runs, "split"),
        )
        for ch, x, y in rows:
            ax.annotate(f"C={ch}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if teacher is not None:
            ax.axhline(teacher, color=c, linestyle=":", linewidth=1, label=series_label(run, runs, "teacher"))
        drawn = True
    for (name, x), style in zip(sorted(marks.items()), ("--", "-."), strict=False):
        ax.axvline(x, color="#555555", linestyle=style, linewidth=1, label=f"{name}: {x:,.0f} B")
    if drawn:
        ax.set_xscale("log")
    return finish(fig, ax, drawn)


def _bench(runs: list[RunData]) -> list[tuple[str, BenchRun]]:
    """Edge bench runs with a label prefix (the run's name when several runs are overlaid)."""
    bench = [r for r in runs if isinstance(r, BenchRun)]
    return [(f"{r.name}: " if len(bench) > 1 else "", r) for r in bench]


def _measured(run: BenchRun) -> list[BenchWorker]:
    """Workers with a total latency (at least one successful request)."""
    return [w for w in run.workers if w.latency("total", "mean") is not None]


@figure(
    "bench_latency",
    "Latency per stage, mean per request",
    "workers/*/summary.json or requests.jsonl with successful requests",
    "edge-bench",
)
def bench_latency(runs: list[RunData]) -> Figure | None:
    """Stacked horizontal bars: mean ms per stage for every configuration, total written beside."""
    bars = [(prefix + w.label, w) for prefix, run in _bench(runs) for w in _measured(run)]
    if not bars:
        return None
    height = max(SIZE[1], 1.6 + 0.28 * len(bars))
    fig = Figure(figsize=(SIZE[0], height), dpi=DPI, facecolor="white", layout="constrained")
    ax = fig.add_subplot()
    ax.set_title("Latency per stage (mean per request; device stages emulated)", fontsize=11)
    ax.set_xlabel("latency per request (ms)")
    ax.grid(True, axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    y = list(range(len(bars)))[::-1]  # first configuration on top
    left = [0.0] * len(bars)
    for stage in BENCH_STAGES:
        widths = [w.latency(stage, "mean") or 0.0 for _, w in bars]
        if not any(widths):
            continue
        ax.barh(y, widths, left=left, height=0.7, color=STAGE_COLOURS[stage], label=stage, edgecolor="white")
        left = [a + b for a, b in zip(left, widths, strict=True)]
    span = max(max(left), max(w.latency("total", "mean") or 0.0 for _, w in bars)) or 1.0
    for yy, (_, w) in zip(y, bars, strict=True):
        total = w.latency("total", "mean") or 0.0
        ax.plot([total], [yy], marker="|", color="#222222", markersize=9)
        ax.annotate(f"{total:.3g} ms", (total, yy), xytext=(6, -3), textcoords="offset points", fontsize=7)
    ax.set_xlim(0, span * 1.18)
    ax.set_yticks(y, [name for name, _ in bars], fontsize=7)
    for tick, (_, w) in zip(ax.get_yticklabels(), bars, strict=True):
        tick.set_color(colour(w.mode))  # the label in its mode's colour, as elsewhere
    ax.plot([], [], marker="|", color="#222222", linestyle="none", label="total (mean)")
    fig.legend(fontsize=7, frameon=False, loc="outside lower center", ncols=6)
    return fig


def _traced(run: BenchRun) -> list[BenchWorker]:
    """Up to two traced workers: split and local on the first device (else any traced ones)."""
    traced = [w for w in run.workers if w.trace and w.trace.get("t_s")]
    if not traced:
        return []
    device = traced[0].device
    picked = [
        next((w for w in traced if w.mode == mode and w.device == device), None)
        for mode in ("split", "local")
    ]
    chosen = [w for w in picked if w is not None]
    return chosen if chosen else traced[:2]


@figure(
    "bench_power",
    "Device power over time, traced requests",
    "workers/*/power_trace.json with samples",
    "edge-bench",
)
def bench_power(runs: list[RunData]) -> Figure | None:
    """The power meter's samples over the first requests of one or two configurations, stages shaded."""
    panels = [(prefix, w) for prefix, run in _bench(runs)[:1] for w in _traced(run)]
    if not panels:
        return None
    height = SIZE[1] if len(panels) == 1 else 5.6
    fig = Figure(figsize=(SIZE[0], height), dpi=DPI, facecolor="white", layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    shown: dict[str, Artist] = {}
    for ax, (prefix, w) in zip(axes, panels, strict=True):
        trace = w.trace or {}
        for st in trace.get("stages", []):
            name = st.get("stage", "")
            patch = ax.axvspan(
                1e3 * st["t0_s"], 1e3 * st["t1_s"], color=STAGE_COLOURS.get(name, "#eeeeee"), alpha=0.6, lw=0
            )
            shown.setdefault(name, patch)
        ax.step(
            [1e3 * t for t in trace["t_s"]],
            trace["watts"],
            where="post",
            color=colour(w.mode),
            marker=".",
            markersize=3,
            linewidth=1.2,
            label=f"{prefix}{w.label}",
        )
        n = len({st.get("request_id") for st in trace.get("stages", [])})
        ax.set_title(f"{prefix}{w.label}: {n} requests ({w.mode})", fontsize=10)
        ax.set_ylabel("device power (W)")
        ax.set_ylim(bottom=0)
        ax.grid(True, color="#dddddd", linewidth=0.6)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[-1].set_xlabel("time since the first traced request (ms, real time on this host)")
    handles = [shown[s] for s in BENCH_STAGES if s in shown] + [
        shown[s] for s in shown if s not in BENCH_STAGES
    ]
    labels = [s for s in BENCH_STAGES if s in shown] + [s for s in shown if s not in BENCH_STAGES]
    fig.legend(handles, labels, fontsize=7, frameon=False, ncols=6, loc="outside lower center")
    return fig


@figure(
    "bench_energy",
    "Device energy per inference per mode",
    "workers with energy_J in their summaries",
    "edge-bench",
)
def bench_energy(runs: list[RunData]) -> Figure | None:
    """Grouped bars per device x network: mJ per inference of local, offload and split (per C)."""
    import numpy as np

    groups: dict[str, list[tuple[str, str, float]]] = {}  # group -> [(series, mode, mJ)]
    for prefix, run in _bench(runs):
        measured = [w for w in _measured(run) if w.energy_J() is not None]
        nets: dict[str, list[str]] = {w.device: [] for w in measured}  # device -> its networks, in order
        for w in measured:
            if w.mode != "local" and w.network not in nets[w.device]:
                nets[w.device].append(w.network)
        for w in measured:
            label = w.mode if w.channels is None else f"split C={w.channels}"
            targets = nets[w.device] if w.mode == "local" and nets[w.device] else [w.network]
            mj = 1e3 * (w.energy_J() or 0.0)  # never None here: measured has energy
            for net in targets:
                groups.setdefault(f"{prefix}{w.device}\n{net}", []).append((label, w.mode, mj))
    if not groups:
        return None
    series = list(dict.fromkeys(s for bars in groups.values() for s, _, _ in bars))
    modes = {s: m for bars in groups.values() for s, m, _ in bars}
    fig, ax = new_figure(
        "Device energy per inference (mean)", "device / network", "energy per inference (mJ)"
    )
    ax.set_axisbelow(True)
    x = np.arange(len(groups))
    width = 0.8 / len(series)
    splits = [s for s in series if modes[s] == "split"]  # one shade of the split colour per C
    top = max(v for bars in groups.values() for _, _, v in bars) or 1.0
    for j, name in enumerate(series):
        vals = [dict((s, v) for s, _, v in bars).get(name) for bars in groups.values()]
        xs = [x[i] + (j - (len(series) - 1) / 2) * width for i, v in enumerate(vals) if v is not None]
        ys = [v for v in vals if v is not None]
        alpha = 0.85 - 0.4 * splits.index(name) / max(1, len(splits) - 1) if name in splits else 0.85
        bars = ax.bar(xs, ys, width, color=colour(modes[name]), alpha=alpha, label=name)
        for b, v in zip(bars, ys, strict=True):
            ax.annotate(
                f"{v:.3g}",
                (b.get_x() + b.get_width() / 2, v),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                fontsize=6,
            )
    ax.set_xticks(x, list(groups), fontsize=8)
    ax.set_ylim(0, top * 1.15)
    return finish(fig, ax, True)


@figure(
    "bench_payload",
    "Accuracy against payload bytes per C",
    "split workers with accuracy and payload_bytes",
    "edge-bench",
)
def bench_payload(runs: list[RunData]) -> Figure | None:
    """Split accuracy against payload per C; offload's JPEG as a marker, raw input size as a line."""
    import numpy as np

    fig, ax = new_figure(
        "Accuracy against payload per inference",
        "payload per inference (B, log scale)",
        "accuracy (fraction)",
    )
    drawn = False
    raw: set[float] = set()
    for i, (prefix, run) in enumerate(_bench(runs)):
        done = [w for w in _measured(run) if w.summary.get("accuracy") is not None]
        raw |= {float(w.summary["raw_bytes"]) for w in done if w.summary.get("raw_bytes")}
        per_c: dict[int, list[BenchWorker]] = {}
        for w in done:
            if w.mode == "split" and w.channels is not None and w.summary.get("payload_bytes"):
                per_c.setdefault(w.channels, []).append(w)
        marker = MARKERS[i % len(MARKERS)]
        if per_c:  # accuracy and payload do not depend on the network: mean over the workers of a C
            pts = [
                (
                    c,
                    float(np.mean([w.summary["payload_bytes"] for w in ws])),
                    float(np.mean([w.summary["accuracy"] for w in ws])),
                )
                for c, ws in sorted(per_c.items())
            ]
            ax.plot(
                [p[1] for p in pts],
                [p[2] for p in pts],
                marker=marker,
                color=colour("split"),
                label=f"{prefix}split (per C)",
            )
            for c, xx, yy in pts:
                ax.annotate(f"C={c}", (xx, yy), textcoords="offset points", xytext=(4, 4), fontsize=8)
            drawn = True
        off = [w for w in done if w.mode == "offload" and w.summary.get("payload_bytes")]
        if off:
            xx = float(np.mean([w.summary["payload_bytes"] for w in off]))
            yy = float(np.mean([w.summary["accuracy"] for w in off]))
            ax.plot(
                [xx],
                [yy],
                marker="*",
                markersize=12,
                linestyle="none",
                color=colour("offload"),
                label=f"{prefix}offload (JPEG, {xx:,.0f} B)",
            )
            drawn = True
        local = [w for w in done if w.mode == "local"]
        if local and drawn:
            acc = float(np.mean([w.summary["accuracy"] for w in local]))
            ax.axhline(
                acc, color=colour("local"), linestyle=":", linewidth=1.2, label=f"{prefix}local (no payload)"
            )
    if not drawn:
        return None
    for x, style in zip(sorted(raw), ("--", "-.", ":"), strict=False):
        ax.axvline(x, color="#555555", linestyle=style, linewidth=1, label=f"raw input: {x:,.0f} B")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_ylim(-0.02, 1.05)
    return finish(fig, ax, True)
