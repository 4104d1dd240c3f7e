"""The report's figures: each one registered function ``(runs) -> Figure | None``.

A function returns None when none of the runs has its data; :data:`NEEDS` says what that
data is, so the report can name what is missing. Colours are fixed per algorithm/method
(:func:`colour`); series of one run differ by line style, runs of one method by marker.
Edge bench figures colour by mode (local / offload / split) and shade latency stages in
fixed, lighter :data:`STAGE_COLOURS`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from fedsim.registry import Registry
from fedsim.report.data import BENCH_STAGES, BenchWorker, RunData

FigureFn = Callable[[list[RunData]], Figure | None]

#: name -> figure function (the entry's summary is the figure's title)
FIGURES: Registry[FigureFn] = Registry("figure")
#: name -> what the figure needs (shown when it cannot be drawn)
NEEDS: dict[str, str] = {}
#: registration order (the order of the report)
ORDER: list[str] = []
#: name -> kind of run it draws ("fl", "edge" or "edge-bench"); not listed as missing without such runs
KIND: dict[str, str] = {}

SIZE = (6.4, 4.0)  # inches
DPI = 100  # PNG of 640 x 400 pixels

PALETTE = {
    "fedavg": "#1f77b4",
    "fedprox": "#2ca02c",
    "fedloge": "#d62728",
    "bottlefit": "#9467bd",
    # edge bench modes (split computing is BottleFit's, hence its colour)
    "local": "#8c564b",
    "offload": "#ff7f0e",
    "split": "#9467bd",
}
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
_FALLBACK = ["#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def colour(method: str) -> str:
    """The colour of an algorithm or method: fixed for known names, stable for others."""
    return PALETTE.get(method) or _FALLBACK[zlib.crc32(method.encode()) % len(_FALLBACK)]


def figure(name: str, title: str, needs: str, kind: str = "fl") -> Callable[[FigureFn], FigureFn]:
    """Register a figure function under ``name``."""

    def deco(fn: FigureFn) -> FigureFn:
        FIGURES.register(name, summary=title)(fn)
        NEEDS[name] = needs
        KIND[name] = kind
        ORDER.append(name)
        return fn

    return deco


def _new(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=SIZE, dpi=DPI, facecolor="white")
    ax = fig.add_subplot()
    ax.set_facecolor("white")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, color="#dddddd", linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def _label(run: RunData, runs: list[RunData], series: str) -> str:
    who = run.method if len(runs) == 1 else f"{run.method} ({run.name})"
    return f"{who}: {series}" if series else who


def _finish(fig: Figure, ax: object, drawn: bool) -> Figure | None:
    if not drawn:
        return None
    if ax.get_legend_handles_labels()[0]:  # type: ignore[attr-defined]
        ax.legend(fontsize=8, frameon=False)  # type: ignore[attr-defined]
    fig.tight_layout()
    return fig


def _fl(runs: list[RunData]) -> list[tuple[int, RunData]]:
    return [(i, r) for i, r in enumerate(runs) if r.kind == "fl"]


def _lines(
    runs: list[RunData], series: list[tuple[str, str, str]], title: str, ylabel: str, x: str = "round"
) -> Figure | None:
    """Metrics columns against ``x`` (round or another metrics column); series: (key, label, style)."""
    xlabel = {"round": "round", "virtual_time_s": "virtual time (s)", "energy_J": "cumulative energy (J)"}[x]
    fig, ax = _new(title, xlabel, ylabel)
    drawn = False
    for i, run in _fl(runs):
        for key, name, style in series:
            rows = [r for r in run.metrics if r.get(key) is not None and r.get(x) is not None]
            if not rows:
                continue
            ax.plot(  # type: ignore[attr-defined]
                [r[x] for r in rows],
                [r[key] for r in rows],
                linestyle=style,
                marker=_MARKERS[i % len(_MARKERS)] if len(runs) > 1 else None,
                markersize=3,
                color=colour(run.method),
                label=_label(run, runs, name),
            )
            drawn = True
    return _finish(fig, ax, drawn)


ACCURACY_SERIES = [
    ("server_accuracy", "generic (global test set)", "-"),
    ("server_ssec_accuracy", "generic, SSE-C head", ":"),
    ("clients_accuracy", "local (clients' test sets)", "--"),
]


@figure("accuracy", "Test accuracy per round", "server_accuracy or clients_accuracy in metrics.jsonl")
def accuracy(runs: list[RunData]) -> Figure | None:
    """Generic (server) and local (clients) test accuracy against round."""
    return _lines(runs, ACCURACY_SERIES, "Test accuracy per round", "accuracy (fraction)")


@figure("loss", "Loss per round", "a loss column in metrics.jsonl")
def loss(runs: list[RunData]) -> Figure | None:
    """Training, generic and local test loss against round."""
    series = [
        ("train_loss", "train (mean over clients)", "-."),
        ("server_loss", "generic test", "-"),
        ("clients_loss", "local test", "--"),
    ]
    return _lines(runs, series, "Loss per round", "loss (cross-entropy)")


@figure("client_accuracy", "Per-client accuracy, last evaluated round", "client evaluation rows")
def client_accuracy(runs: list[RunData]) -> Figure | None:
    """Box plot of the clients' local test accuracy at the last round they were evaluated."""
    fig, ax = _new("Per-client local accuracy, last evaluated round", "run", "accuracy (fraction)")
    data, labels, colours = [], [], []
    for _, run in _fl(runs):
        rows = [r for r in run.client_rows("evaluate") if r.get("accuracy") is not None]
        if not rows:
            continue
        last = max(r["round"] for r in rows)
        data.append([r["accuracy"] for r in rows if r["round"] == last])
        labels.append(f"{_label(run, runs, '')}\nround {last}, {len(data[-1])} clients")
        colours.append(colour(run.method))
    if not data:
        return None
    box = ax.boxplot(data, patch_artist=True)  # type: ignore[attr-defined]
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)  # type: ignore[attr-defined]
    for patch, c in zip(box["boxes"], colours, strict=True):
        patch.set_facecolor(c)
        patch.set_alpha(0.5)
    return _finish(fig, ax, True)


@figure(
    "head_middle_tail", "Head / middle / tail accuracy, last round", "*_accuracy_head/middle/tail columns"
)
def head_middle_tail(runs: list[RunData]) -> Figure | None:
    """Grouped bars of head/middle/tail accuracy (generic and local) at the last row that has them."""
    import numpy as np

    groups = [("server_accuracy", "generic"), ("clients_accuracy", "local")]
    bars = []  # (label, colour, hatch, [head, middle, tail])
    for _, run in _fl(runs):
        for prefix, name in groups:
            keys = [f"{prefix}_{p}" for p in ("head", "middle", "tail")]
            rows = [r for r in run.metrics if any(r.get(k) is not None for k in keys)]
            if rows:  # a group without samples (none in a balanced set) has no bar, never a 0
                hatch = "" if prefix == "server_accuracy" else "//"
                vals = [float("nan") if rows[-1].get(k) is None else rows[-1][k] for k in keys]
                bars.append((_label(run, runs, name), colour(run.method), hatch, vals))
    if not bars:
        return None
    fig, ax = _new("Head / middle / tail accuracy, last round", "class group", "accuracy (fraction)")
    x = np.arange(3)
    width = 0.8 / len(bars)
    for j, (name, c, hatch, vals) in enumerate(bars):
        ax.bar(
            x + (j - (len(bars) - 1) / 2) * width, vals, width, color=c, alpha=0.75, hatch=hatch, label=name
        )  # type: ignore[attr-defined]
    ax.set_xticks(x, ["head", "middle", "tail"])  # type: ignore[attr-defined]
    ax.set_ylim(0, 1.05)  # type: ignore[attr-defined]
    return _finish(fig, ax, True)


@figure("bytes", "Bytes sent per round", "bytes_down / bytes_up in metrics.jsonl")
def bytes_per_round(runs: list[RunData]) -> Figure | None:
    """Bytes sent to clients (down) and back (up) per round."""
    series = [("bytes_down", "down (server to clients)", "-"), ("bytes_up", "up (clients to server)", "--")]
    return _lines(runs, series, "Message payload per round", "bytes per round (B)")


@figure("compute", "Compute seconds per client", "client train rows with compute_s")
def compute_per_client(runs: list[RunData]) -> Figure | None:
    """Mean wall-clock training seconds per client (partition), over the rounds it trained."""
    import numpy as np

    fig, ax = _new(
        "Training compute per client (wall clock)", "client (partition id)", "compute per round (s)"
    )
    fl = [(i, r) for i, r in _fl(runs) if any(x.get("compute_s") is not None for x in r.client_rows("train"))]
    if not fl:
        return None
    width = 0.8 / len(fl)
    for j, (_, run) in enumerate(fl):
        per: dict[int, list[float]] = {}
        for r in run.client_rows("train"):
            if r.get("compute_s") is not None:
                per.setdefault(int(r["partition_id"]), []).append(r["compute_s"])
        ids = sorted(per)
        ax.bar(  # type: ignore[attr-defined]
            np.array(ids) + (j - (len(fl) - 1) / 2) * width,
            [float(np.mean(per[k])) for k in ids],
            width,
            color=colour(run.method),
            alpha=0.75,
            label=_label(run, runs, ""),
        )
    return _finish(fig, ax, True)


@figure("accuracy_vs_time", "Accuracy against virtual time", "virtual_time_s in metrics.jsonl (system model)")
def accuracy_vs_time(runs: list[RunData]) -> Figure | None:
    """Generic and local accuracy against the system model's virtual time."""
    return _lines(
        runs, ACCURACY_SERIES, "Accuracy against virtual time", "accuracy (fraction)", "virtual_time_s"
    )


@figure("accuracy_vs_energy", "Accuracy against energy", "energy_J in metrics.jsonl (system model)")
def accuracy_vs_energy(runs: list[RunData]) -> Figure | None:
    """Generic and local accuracy against the clients' cumulative energy."""
    return _lines(
        runs, ACCURACY_SERIES, "Accuracy against cumulative energy", "accuracy (fraction)", "energy_J"
    )


@figure("edge_payload", "Accuracy against payload bytes per C", "edge results.jsonl or evaluate.json", "edge")
def edge_payload(runs: list[RunData]) -> Figure | None:
    """Split accuracy against payload bytes per bottleneck size C; raw-input and JPEG sizes marked."""
    fig, ax = _new(
        "Accuracy against payload (per bottleneck channels C)", "payload per image (B)", "accuracy (fraction)"
    )
    drawn = False
    marks: dict[str, float] = {}
    for i, run in enumerate(runs):
        if run.kind != "edge":
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
            marker=_MARKERS[i % len(_MARKERS)],
            color=c,
            label=_label(run, runs, "split"),
        )  # type: ignore[attr-defined]
        for ch, x, y in rows:
            ax.annotate(f"C={ch}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)  # type: ignore[attr-defined]
        if teacher is not None:
            ax.axhline(teacher, color=c, linestyle=":", linewidth=1, label=_label(run, runs, "teacher"))  # type: ignore[attr-defined]
        drawn = True
    for (name, x), style in zip(sorted(marks.items()), ("--", "-."), strict=False):
        ax.axvline(x, color="#555555", linestyle=style, linewidth=1, label=f"{name}: {x:,.0f} B")  # type: ignore[attr-defined]
    if drawn:
        ax.set_xscale("log")  # type: ignore[attr-defined]
    return _finish(fig, ax, drawn)


# --------------------------------------------------------------------------- edge bench


def _bench(runs: list[RunData]) -> list[tuple[str, RunData]]:
    """Edge bench runs with a label prefix (the run's name when several runs are overlaid)."""
    bench = [r for r in runs if r.kind == "edge-bench"]
    return [(f"{r.name}: " if len(bench) > 1 else "", r) for r in bench]


def _measured(run: RunData) -> list[BenchWorker]:
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


def _traced(run: RunData) -> list[BenchWorker]:
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
    shown: dict[str, object] = {}
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
            series = w.mode if w.channels is None else f"split C={w.channels}"
            targets = nets[w.device] if w.mode == "local" and nets[w.device] else [w.network]
            for net in targets:
                groups.setdefault(f"{prefix}{w.device}\n{net}", []).append(
                    (series, w.mode, 1e3 * w.energy_J())
                )
    if not groups:
        return None
    series = list(dict.fromkeys(s for bars in groups.values() for s, _, _ in bars))
    modes = {s: m for bars in groups.values() for s, m, _ in bars}
    fig, ax = _new("Device energy per inference (mean)", "device / network", "energy per inference (mJ)")
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
    return _finish(fig, ax, True)


@figure(
    "bench_payload",
    "Accuracy against payload bytes per C",
    "split workers with accuracy and payload_bytes",
    "edge-bench",
)
def bench_payload(runs: list[RunData]) -> Figure | None:
    """Split accuracy against payload per C; offload's JPEG as a marker, raw input size as a line."""
    import numpy as np

    fig, ax = _new(
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
        marker = _MARKERS[i % len(_MARKERS)]
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
    return _finish(fig, ax, True)
