"""Running a sweep: one run folder per cell of the grid, side by side, resumable, one table.

A sweep folder::

    SWEEP/                     OUTPUT/NAME-sweep-YYYYmmdd-HHMMSS
      sweep.json               what was swept: the file, its mapping, the grid, the cells
      cells/<cell>/            one run folder per cell (scenario.yaml, metrics.jsonl, ...)
      table.md                 per combination of the grid's other keys: mean ± std over seeds
      summary.json             the same numbers, and each cell's status
      report.html              curves: mean and spread over seeds, per combination

Every cell's folder is written (its resolved scenario) before the first runs, so an
interrupted sweep knows what is left: ``fedsim run --resume SWEEP`` runs the cells that
are missing or did not complete (a cell cut off mid-way continues from its checkpoint, or
starts again). ``--jobs N`` runs N cells side by side, each in its own process. A cell's
results are those of the same scenario run on its own (the grid only names runs).
"""

from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from rich.console import Console

from fedsim.config import Scenario
from fedsim.config.sweep import SEED, Cell, expand
from fedsim.errors import ConfigError, UserError
from fedsim.files import write_atomic, write_json
from fedsim.loader import FileContents
from fedsim.runstore import METRICS_FILE, RunFolder, new_run_dir

SWEEP_FILE = "sweep.json"
CELLS_DIR = "cells"
TABLE_FILE = "table.md"
SUMMARY_FILE = "summary.json"


def is_sweep(path: Path) -> bool:
    """Whether ``path`` is a sweep folder."""
    return (path / SWEEP_FILE).is_file()


@dataclass(frozen=True)
class Sweep:
    """A sweep folder and what it holds."""

    path: Path
    spec: dict[str, Any]

    @classmethod
    def open(cls, path: Path) -> Sweep:
        if not is_sweep(path):
            raise UserError(f"{path}: not a sweep folder; expected it to contain {SWEEP_FILE}")
        return cls(path.absolute(), json.loads((path / SWEEP_FILE).read_text()))

    @property
    def cells(self) -> list[Cell]:
        return expand(self.spec["grid"], self.spec["source"])

    def folder(self, cell: Cell) -> RunFolder:
        return RunFolder(self.path / CELLS_DIR / cell.folder)

    def status(self, cell: Cell) -> str:
        """The cell's run status (summary.json), ``running`` (rows, no summary) or ``missing``."""
        folder = self.folder(cell)
        summary = folder.summary()
        if summary.get("status"):
            return str(summary["status"])
        return "running" if (folder.path / METRICS_FILE).exists() else "missing"


def _group_keys(cells: list[Cell]) -> list[str]:
    return [k for k, _ in cells[0].values if k != SEED] if cells else []


def start_sweep(contents: FileContents, jobs: int, stop_after: int | None, console: Console) -> Path:
    """Validate every cell, write the sweep folder with one folder per cell, and run them."""
    if contents.kind != "fl":
        raise ConfigError(f"{contents.source}: sweep: only files of kind fl can declare a sweep (for now)")
    cells = contents.cells()
    # every cell validates before anything is written (all of kind fl, checked above)
    docs = [cast(Scenario, contents.document(c)) for c in cells]
    from fedsim.workspace import federated_data

    for doc in {d.to_json(): d for d in docs}.values():
        federated_data(doc)  # data errors surface before anything is written
    path = new_run_dir(docs[0], "-sweep")
    spec = {
        "file": str(contents.path),
        "source": contents.source,
        "name": docs[0].name,
        "raw": contents.raw,
        "grid": contents.sweep,
        "cells": [c.label for c in cells],
    }
    (path / CELLS_DIR).mkdir(parents=True)
    write_json(path / SWEEP_FILE, spec)
    sweep = Sweep(path, json.loads((path / SWEEP_FILE).read_text()))
    for cell, doc in zip(cells, docs, strict=True):
        sweep.folder(cell).create(doc)
    run_cells(sweep, jobs, stop_after, console)
    return path


def resume_sweep(path: Path, jobs: int, stop_after: int | None, console: Console) -> Path:
    """Run the cells of a sweep folder that are missing or did not complete."""
    sweep = Sweep.open(path)
    for cell in sweep.cells:  # a folder lost before it was written is written again
        folder = sweep.folder(cell)
        if not (folder.path / "scenario.yaml").exists():
            from fedsim.loader import validate

            folder.path.mkdir(parents=True, exist_ok=True)
            (folder.path / "checkpoints").mkdir(exist_ok=True)
            doc = validate(cell.apply(sweep.spec["raw"]), f"{sweep.spec['source']} [{cell.label}]")
            (folder.path / "scenario.yaml").write_text(doc.to_yaml())
    run_cells(sweep, jobs, stop_after, console)
    return sweep.path


def run_cell(folder: str, stop_after: int | None = None) -> dict[str, Any]:
    """Run one cell's folder to its end: from its first round, or on from where it stopped."""
    from fedsim.runner import resume_run, run_in

    quiet = Console(quiet=True)
    run = RunFolder(folder)
    if (run.path / METRICS_FILE).exists():
        _, summary = resume_run(run.path, None, stop_after, False, False, quiet)
        return summary
    return run_in(run, run.scenario(), stop_after, False, False, quiet)


def run_cells(sweep: Sweep, jobs: int, stop_after: int | None, console: Console) -> None:
    """Run every cell not completed yet (``jobs`` at a time), then write the table and report."""
    cells = sweep.cells
    todo = [c for c in cells if sweep.status(c) != "completed"]
    done = len(cells) - len(todo)
    console.print(
        f"sweep {sweep.spec['name']}: {len(cells)} cells, {done} done, {len(todo)} to run"
        + (f", {jobs} at a time" if jobs > 1 and todo else ""),
        highlight=False,
        markup=False,
    )
    t0 = time.monotonic()
    failures: list[str] = []

    def report(cell: Cell, summary: dict[str, Any] | None, error: str | None) -> None:
        nonlocal done
        done += 1
        what = error or _cell_line(summary or {})
        failures.extend([f"{cell.label}: {error}"] if error else [])
        console.print(
            f"  [{done}/{len(cells)}] {cell.label}: {what} ({time.monotonic() - t0:.0f} s)", highlight=False
        )

    if jobs <= 1:
        for cell in todo:
            try:
                report(cell, run_cell(str(sweep.folder(cell).path), stop_after), None)
            except UserError as exc:  # a cell that fails does not stop the others
                report(cell, None, str(exc))
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = [(c, pool.submit(run_cell, str(sweep.folder(c).path), stop_after)) for c in todo]
            for cell, future in futures:
                try:
                    report(cell, future.result(), None)
                except Exception as exc:
                    report(cell, None, f"{type(exc).__name__}: {exc}".splitlines()[0])
    write_results(sweep)
    if failures:
        raise UserError(
            f"{len(failures)} of {len(cells)} cells failed (first: {failures[0]}); see {sweep.path}"
        )


def _cell_line(summary: dict[str, Any]) -> str:
    acc = summary.get("final_server_accuracy")
    text = (
        f"{summary.get('status')}, {summary.get('rounds_completed')}/{summary.get('rounds_planned')} rounds"
    )
    return text + (f", test accuracy {acc:.4f}" if acc is not None else "")


# ------------------------------------------------------------------------------ table


#: Columns that count clients, not measure them.
COUNTS = ("clients_sampled", "clients_ok", "clients_available")


def _numbers(rows: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Per metric of the runs' rows: (final value, best value), for server_* and clients_* columns."""
    from fedsim.compare import COLUMNS

    out: dict[str, tuple[float, float]] = {}
    found = {k for r in rows for k in r if k.startswith(("server_", "clients_")) and k not in COUNTS}
    known = [k for k, _ in COLUMNS if k in found]
    keys = known + sorted(found - set(known))
    for key in keys:
        values = [
            r[key] for r in rows if isinstance(r.get(key), int | float) and not isinstance(r[key], bool)
        ]
        if values:
            best = min(values) if "loss" in key else max(values)
            out[key] = (float(values[-1]), float(best))
    return out


def sweep_table(sweep: Sweep) -> dict[str, Any]:
    """Per combination of the grid's keys other than the seed: n, and mean ± std of each
    metric's final and best value over the seeds (population std, as ``fedsim compare``)."""
    cells = sweep.cells
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        name = Cell(tuple((k, cell.get(k)) for k in _group_keys(cells))).label or "all"
        groups.setdefault(name, []).append(cell)
    table: dict[str, Any] = {}
    for name, members in groups.items():
        per_metric: dict[str, list[tuple[float, float]]] = {}
        complete = 0
        for cell in members:
            run = sweep.folder(cell)
            if sweep.status(cell) != "completed":
                continue
            complete += 1
            for key, pair in _numbers(run.read(METRICS_FILE)).items():
                per_metric.setdefault(key, []).append(pair)
        table[name] = {
            "cells": len(members),
            "completed": complete,
            "metrics": {
                key: {
                    "final_mean": float(np.mean([p[0] for p in pairs])),
                    "final_std": float(np.std([p[0] for p in pairs])),
                    "best_mean": float(np.mean([p[1] for p in pairs])),
                    "best_std": float(np.std([p[1] for p in pairs])),
                    "n": len(pairs),
                    "final": [p[0] for p in pairs],
                }
                for key, pairs in per_metric.items()
            },
        }
    return table


def table_markdown(sweep: Sweep, table: dict[str, Any]) -> str:
    """One row per metric, one column per combination: final mean ± std (best mean ± std)."""
    groups = list(table)
    metrics = list(dict.fromkeys(k for g in groups for k in table[g]["metrics"]))
    lines = [
        f"# {sweep.spec['name']}: {len(sweep.cells)} cells",
        "",
        f"`{sweep.spec['source']}`; final value, mean ± std over seeds (best value over rounds in brackets).",
        "",
        "| metric | " + " | ".join(f"{g} (n={table[g]['completed']})" for g in groups) + " |",
        "|---" * (len(groups) + 1) + "|",
    ]
    for key in metrics:
        cells = []
        for g in groups:
            m = table[g]["metrics"].get(key)
            final = "-" if m is None else f"{m['final_mean']:.4f} ± {m['final_std']:.4f}"
            cells.append(final if m is None else f"{final} ({m['best_mean']:.4f} ± {m['best_std']:.4f})")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(sweep: Sweep) -> dict[str, Any]:
    """table.md, summary.json and report.html of a sweep folder (from the cells done so far)."""
    table = sweep_table(sweep)
    table_md = table_markdown(sweep, table)
    write_atomic(sweep.path / TABLE_FILE, table_md)
    statuses = {c.label: sweep.status(c) for c in sweep.cells}
    complete = sum(s == "completed" for s in statuses.values())
    summary = {
        "name": sweep.spec["name"],
        "status": "completed" if complete == len(statuses) else "incomplete",
        "cells": statuses,
        "table": table,
    }
    write_json(sweep.path / SUMMARY_FILE, summary)
    try:
        from fedsim.report.sweep import write_sweep_report

        write_sweep_report(sweep, table, table_md)
    except Exception as exc:  # a figure must never cost the sweep's table
        (sweep.path / "report-error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
    return summary


def cell_runs(path: Path) -> list[Path]:
    """The run folders of a sweep folder's cells that have rows (for ``fedsim compare``)."""
    sweep = Sweep.open(path)
    return [f.path for f in map(sweep.folder, sweep.cells) if (f.path / METRICS_FILE).exists()]
