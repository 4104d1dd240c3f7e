"""The edge bench's figure of the adaptive mode: its mean latency or energy against every fixed
mode's, on each device x link, relative to the best fixed mode there."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from fedsim.edge.bench_compare import compare_adaptive
from fedsim.edge.report.data import BenchRun
from fedsim.report.data import RunData
from fedsim.report.figures import DPI, SIZE, add_colours, colour, figure

add_colours({"adaptive": "#2ca02c"})
#: What each objective's panel compares (a key of :func:`compare_adaptive`'s rows) and its unit.
PANELS = {"latency": ("latency_ms", "mean latency"), "energy": ("energy_mJ", "mean device energy")}
#: Hatches that tell the bottleneck widths C of split computing apart.
HATCHES = ("", "//", "xx", "..")


@figure(
    "bench_adaptive",
    "Adaptive against the fixed modes on each link",
    "an edge bench with mode adaptive (workers/*/summary.json)",
    "edge-bench",
    optional=True,
)
def bench_adaptive(runs: list[RunData]) -> Figure | None:
    """Grouped bars per device x link: each fixed mode's and adaptive's mean cost over the best
    fixed mode's (log scale; below 1: better than every fixed mode), one panel per objective."""
    bench = [r for r in runs if isinstance(r, BenchRun)]
    rows = [
        (f"{run.name}: " if len(bench) > 1 else "", row)
        for run in bench
        for row in compare_adaptive([w.summary for w in run.workers if w.summary.get("latency_ms")])
    ]
    objectives = [o for o in PANELS if any(r["objective"] == o for _, r in rows)]
    if not objectives:
        return None
    fig = Figure(
        figsize=(SIZE[0], 0.75 * SIZE[1] * len(objectives) + 0.6),
        dpi=DPI,
        facecolor="white",
        layout="constrained",
    )
    axes = fig.subplots(len(objectives), 1, squeeze=False)[:, 0]
    for ax, objective in zip(axes, objectives, strict=True):
        key, what = PANELS[objective]
        group = [(p, r) for p, r in rows if r["objective"] == objective]
        names = [*sorted({k for _, r in group for k in r["fixed"]}), "adaptive"]
        width = 0.8 / len(names)
        splits = [n for n in names if n.startswith("split")]
        for j, name in enumerate(names):
            xs, ratios = [], []
            for g, (_, r) in enumerate(group):
                value = r[f"adaptive_{key}"] if name == "adaptive" else r["fixed"].get(name, {}).get(key)
                if value is not None:
                    xs.append(g + (j - (len(names) - 1) / 2) * width)
                    ratios.append(value / r["fixed"][r["best_fixed"]][key])
            hatch = HATCHES[splits.index(name) % len(HATCHES)] if name in splits else ""
            ax.bar(
                xs,
                ratios,
                width,
                color=colour(name.split("-")[0]),
                hatch=hatch,
                label=name,
                edgecolor="white",
            )
            if name == "adaptive":
                for x, ratio in zip(xs, ratios, strict=True):
                    ax.annotate(f"{ratio:.2f}", (x, ratio), xytext=(0, 2), textcoords="offset points",
                                ha="center", fontsize=7)  # fmt: skip
        ax.axhline(1.0, color="#222222", linewidth=0.8, linestyle=":")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if v in (0.5, 2, 3, 5) else ""))
        ax.set_xticks(
            range(len(group)), [f"{p}{r['device']}\n{r['network'].removeprefix('trace-')}" for p, r in group]
        )
        ax.tick_params(axis="x", labelsize=7)
        ax.set_ylabel(f"{what} / best fixed", fontsize=8)
        ax.set_title(f"objective: {objective} (adaptive minimises it per request)", fontsize=10)
        ax.grid(True, axis="y", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, frameon=False, loc="outside lower center", ncols=len(labels))
    return fig
