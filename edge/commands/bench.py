"""``fedsim edge bench``: local vs offloading vs split computing over devices, links and C."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fedsim.edge.commands.common import SetOption, console
from fedsim.loader import require_kind


def _print_adaptive(rows: list[dict]) -> None:
    """The adaptive runs against the best fixed mode on the same device and link."""
    if not rows:
        return
    table = Table(title="adaptive against the fixed modes (mean per inference; energy with probes)")
    for col in (
        "device",
        "network",
        "objective",
        "adaptive",
        "best fixed",
        "ratio",
        "below every fixed",
        "chosen",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        key, unit = ("latency_ms", "ms") if r["objective"] == "latency" else ("energy_mJ", "mJ")
        best = r["fixed"][r["best_fixed"]][key]
        table.add_row(
            r["device"],
            r["network"],
            r["objective"],
            f"{r[f'adaptive_{key}']:.1f} {unit}",
            f"{r['best_fixed']} {best:.1f} {unit}",
            f"{r['vs_best_fixed']:.2f}",
            "yes" if r["beats_every_fixed"] else "no",
            ", ".join(f"{k} {n}" for k, n in r["choices"].items()),
        )
    console.print(table)


def bench(
    file: Annotated[Path, typer.Argument(help="Bench YAML file.")],
    set_: SetOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Local vs offloading vs split computing (and adaptive) per device x link x C; writes a run folder."""
    from fedsim.edge.bench import run_bench
    from fedsim.edge.bench_compare import BOTTLEFIT_REPORTED
    from fedsim.runner import write_report_safely

    def log(line: str) -> None:
        if not quiet:
            console.print(line, highlight=False)

    require_kind(file, "edge-bench")
    run, summary = run_bench(file, list(set_ or []), log)
    table = Table(title="split computing against local computing and edge offloading (mean per inference)")
    for col in (
        "device",
        "network",
        "C",
        "split ms",
        "vs local",
        "vs offload",
        "split mJ",
        "vs local",
        "vs offload",
        "accuracy",
    ):
        table.add_column(col, justify="right")

    def pct(v: float | None) -> str:
        return "" if v is None else f"{v:+.0f}%"

    for r in summary["comparison"]:
        table.add_row(
            r["device"],
            r["network"],
            str(r["C"]),
            f"{r['split_latency_ms']:.1f}",
            pct(r.get("latency_vs_local_pct")),
            pct(r.get("latency_vs_offload_pct")),
            f"{1e3 * r['split_energy_J']:.2f}",
            pct(r.get("energy_vs_local_pct")),
            pct(r.get("energy_vs_offload_pct")),
            f"{r['split_accuracy']:.3f}",
        )
    console.print(table)
    ref = BOTTLEFIT_REPORTED
    console.print(
        f"BottleFit reports {ref['latency_vs_local']:+.0f}% latency and {ref['energy_vs_local']:+.0f}% power "
        f"against local, {ref['latency_vs_offload']:+.0f}% and {ref['energy_vs_offload']:+.0f}% "
        "against offloading.",
        highlight=False,
    )
    _print_adaptive(summary["adaptive"])
    write_report_safely(run, console)
    console.print(f"{summary['status']}: results in {run}", highlight=False)
