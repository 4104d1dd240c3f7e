"""The report's figures: each one registered function ``(runs) -> Figure | None``.

A function returns None when none of the runs has its data; :data:`NEEDS` says what that
data is, so the report can name what is missing. Colours are fixed per algorithm/method
(:func:`colour`); series of one run differ by line style, runs of one method by marker.
The federated figures are here; other kinds' packages register theirs with :func:`figure`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fedsim.registry import Registry
from fedsim.report.data import RunData

FigureFn = Callable[[list[RunData]], Figure | None]

#: name -> figure function (the entry's summary is the figure's title)
FIGURES: Registry[FigureFn] = Registry("figure")
#: name -> what the figure needs (shown when it cannot be drawn)
NEEDS: dict[str, str] = {}
#: registration order (the order of the report)
ORDER: list[str] = []
#: name -> kind of run it draws (a name of RUN_KINDS); not listed as missing without such runs
KIND: dict[str, str] = {}
#: Figures drawn only where their runs have what they show (see :func:`figure`).
OPTIONAL: set[str] = set()

SIZE = (6.4, 4.0)  # inches
DPI = 100  # PNG of 640 x 400 pixels

PALETTE = {
    "fedavg": "#1f77b4",
    "fedprox": "#2ca02c",
    "fedloge": "#d62728",
}
_FALLBACK = ["#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def add_colours(colours: dict[str, str]) -> None:
    """Fix the colours of more names (another package's methods); a name fixed twice is an error."""
    taken = [n for n in colours if PALETTE.get(n, colours[n]) != colours[n]]
    if taken:
        raise ValueError(f"colours of {', '.join(taken)} are fixed already")
    PALETTE.update(colours)


def colour(method: str) -> str:
    """The colour of an algorithm or method: fixed for known names, stable for others."""
    return PALETTE.get(method) or _FALLBACK[zlib.crc32(method.encode()) % len(_FALLBACK)]


def figure(
    name: str, title: str, needs: str, kind: str = "fl", optional: bool = False
) -> Callable[[FigureFn], FigureFn]:
    """Register a figure function under ``name``; an ``optional`` one that draws nothing (its
    runs lack what it shows, by design) is left out of the report's "not drawn" list."""

    def deco(fn: FigureFn) -> FigureFn:
        FIGURES.register(name, summary=title)(fn)
        NEEDS[name] = needs
        KIND[name] = kind
        if optional:
            OPTIONAL.add(name)
        ORDER.append(name)
        return fn

    return deco


def new_figure(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Axes]:
    """A figure of the report's size with one titled, labelled, gridded axes."""
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


def series_label(run: RunData, runs: list[RunData], series: str) -> str:
    """A legend label: the run's method (and name, when several runs are overlaid) and the series."""
    who = run.method if len(runs) == 1 else f"{run.method} ({run.name})"
    return f"{who}: {series}" if series else who


def finish(fig: Figure, ax: Axes, drawn: bool) -> Figure | None:
    """The figure with its legend and tight layout; None when nothing was drawn."""
    if not drawn:
        return None
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _fl(runs: list[RunData]) -> list[tuple[int, RunData]]:
    return [(i, r) for i, r in enumerate(runs) if r.kind == "fl"]


def _lines(
    runs: list[RunData], series: list[tuple[str, str, str]], title: str, ylabel: str, x: str = "round"
) -> Figure | None:
    """Metrics columns against ``x`` (round or another metrics column); series: (key, label, style)."""
    xlabel = {"round": "round", "virtual_time_s": "virtual time (s)", "energy_J": "cumulative energy (J)"}[x]
    fig, ax = new_figure(title, xlabel, ylabel)
    drawn = False
    for i, run in _fl(runs):
        for key, name, style in series:
            rows = [r for r in run.metrics if r.get(key) is not None and r.get(x) is not None]
            if not rows:
                continue
            ax.plot(
                [r[x] for r in rows],
                [r[key] for r in rows],
                linestyle=style,
                marker=MARKERS[i % len(MARKERS)] if len(runs) > 1 else None,
                markersize=3,
                color=colour(run.method),
                label=series_label(run, runs, name),
            )
            drawn = True
    return finish(fig, ax, drawn)


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
    fig, ax = new_figure("Per-client local accuracy, last evaluated round", "run", "accuracy (fraction)")
    data, labels, colours = [], [], []
    for _, run in _fl(runs):
        rows = [r for r in run.client_rows("evaluate") if r.get("accuracy") is not None]
        if not rows:
            continue
        last = max(r["round"] for r in rows)
        data.append([r["accuracy"] for r in rows if r["round"] == last])
        labels.append(f"{series_label(run, runs, '')}\nround {last}, {len(data[-1])} clients")
        colours.append(colour(run.method))
    if not data:
        return None
    box = ax.boxplot(data, patch_artist=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    for patch, c in zip(box["boxes"], colours, strict=True):
        patch.set_facecolor(c)
        patch.set_alpha(0.5)
    return finish(fig, ax, True)


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
                bars.append((series_label(run, runs, name), colour(run.method), hatch, vals))
    if not bars:
        return None
    fig, ax = new_figure("Head / middle / tail accuracy, last round", "class group", "accuracy (fraction)")
    x = np.arange(3)
    width = 0.8 / len(bars)
    for j, (name, c, hatch, vals) in enumerate(bars):
        ax.bar(
            x + (j - (len(bars) - 1) / 2) * width, vals, width, color=c, alpha=0.75, hatch=hatch, label=name
        )
    ax.set_xticks(x, ["head", "middle", "tail"])
    ax.set_ylim(0, 1.05)
    return finish(fig, ax, True)


@figure("bytes", "Bytes sent per round", "bytes_down / bytes_up in metrics.jsonl")
def bytes_per_round(runs: list[RunData]) -> Figure | None:
    """Bytes sent to clients (down) and back (up) per round."""
    series = [("bytes_down", "down (server to clients)", "-"), ("bytes_up", "up (clients to server)", "--")]
    return _lines(runs, series, "Message payload per round", "bytes per round (B)")


@figure("compute", "Compute seconds per client", "client train rows with compute_s")
def compute_per_client(runs: list[RunData]) -> Figure | None:
    """Mean wall-clock training seconds per client (partition), over the rounds it trained."""
    import numpy as np

    fig, ax = new_figure(
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
        ax.bar(
            np.array(ids) + (j - (len(fl) - 1) / 2) * width,
            [float(np.mean(per[k])) for k in ids],
            width,
            color=colour(run.method),
            alpha=0.75,
            label=series_label(run, runs, ""),
        )
    return finish(fig, ax, True)


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
