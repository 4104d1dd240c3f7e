"""Side-by-side comparison of run folders: final and best value of each metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedsim.errors import UserError
from fedsim.runstore import METRICS_FILE, RunFolder

#: (metrics.jsonl column, label), in the order shown; absent columns are skipped.
COLUMNS = (
    ("server_accuracy", "generic"),
    ("server_ssec_accuracy", "generic (SSE-C)"),
    ("clients_accuracy", "local (client mean)"),
    ("clients_accuracy_weighted", "local (weighted by test size)"),
    ("clients_accuracy_masked", "local, masked (client mean)"),
    ("clients_accuracy_realigned", "local, realigned (client mean)"),
    ("server_accuracy_head", "generic head"),
    ("server_accuracy_middle", "generic middle"),
    ("server_accuracy_tail", "generic tail"),
    ("server_ssec_accuracy_tail", "generic tail (SSE-C)"),
    ("clients_accuracy_head", "local head"),
    ("clients_accuracy_middle", "local middle"),
    ("clients_accuracy_tail", "local tail"),
    ("clients_accuracy_masked_tail", "local tail (masked)"),
    ("clients_accuracy_realigned_tail", "local tail (realigned)"),
)


def run_table(paths: list[Path]) -> tuple[list[str], list[dict[str, Any]]]:
    """Per run: name, algorithm, rounds, and final/best of every known column."""
    runs = []
    for path in paths:
        folder = RunFolder(path)
        if not (path / METRICS_FILE).exists():
            raise UserError(f"{path}: no {METRICS_FILE}; expected a run folder written by 'fedsim run'")
        rows = folder.read(METRICS_FILE)
        scenario = folder.scenario()
        entry: dict[str, Any] = {
            "run": path.name,
            "algorithm": scenario.algorithm.name,
            "rounds": rows[-1]["round"] if rows else 0,
        }
        for key, _ in COLUMNS:
            values = [r[key] for r in rows if key in r]
            if values:
                entry[key] = (values[-1], max(values))
        runs.append(entry)
    present = [key for key, _ in COLUMNS if any(key in r for r in runs)]
    return present, runs


def label(key: str) -> str:
    """Human label of a metrics column."""
    return dict(COLUMNS).get(key, key)


def grouped(keys: list[str], runs: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """Per algorithm and metric: (mean, std, n) of the final values over its runs."""
    import numpy as np

    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for algo in dict.fromkeys(r["algorithm"] for r in runs):
        mine = [r for r in runs if r["algorithm"] == algo]
        out[algo] = {}
        for key in keys:
            vals = [r[key][0] for r in mine if key in r]
            if vals:
                out[algo][key] = (float(np.mean(vals)), float(np.std(vals)), len(vals))
    return out


def to_target(path: Path, target: float, key: str = "server_accuracy") -> dict[str, Any] | None:
    """The first metrics row where ``key`` reaches ``target``: its round, virtual time and
    cumulative energy (None where the run has no system model); None if never reached."""
    for row in RunFolder(path).read(METRICS_FILE):
        if row.get(key, -1.0) >= target:
            return {
                "round": row["round"],
                "virtual_time_s": row.get("virtual_time_s"),
                "energy_J": row.get("energy_J"),
            }
    return None


def target_rows(paths: list[Path], target: float) -> list[tuple[str, list[str]]]:
    """Table rows (label, one cell per run): rounds, virtual time and energy to ``target``
    generic accuracy; ``not reached`` when the run never gets there, ``-`` without a system model."""
    reached = [to_target(p, target) for p in paths]

    def cells(field: str, fmt: str) -> list[str]:
        return [
            "not reached" if r is None else "-" if r[field] is None else format(r[field], fmt)
            for r in reached
        ]

    return [
        (f"rounds to {target:g}", cells("round", "d")),
        (f"virtual time to {target:g} (s)", cells("virtual_time_s", ".1f")),
        (f"energy to {target:g} (J)", cells("energy_J", ".1f")),
    ]


def system_totals(paths: list[Path]) -> list[tuple[str, list[str]]]:
    """Table rows of final virtual time, energy and discarded updates (runs with a system model)."""
    runs = [RunFolder(p).read(METRICS_FILE) for p in paths]
    if not any("virtual_time_s" in rows[-1] for rows in runs if rows):
        return []

    def total(rows: list[dict[str, Any]], field: str, fmt: str, summed: bool = False) -> str:
        if summed:
            return format(sum(r.get(field, 0) for r in rows), fmt) if any(field in r for r in rows) else "-"
        return format(rows[-1][field], fmt) if rows and field in rows[-1] else "-"

    return [
        ("virtual time (s)", [total(r, "virtual_time_s", ".1f") for r in runs]),
        ("energy (J)", [total(r, "energy_J", ".1f") for r in runs]),
        ("updates dropped", [total(r, "dropped", "d", summed=True) for r in runs]),
        ("updates late", [total(r, "late", "d", summed=True) for r in runs]),
    ]
