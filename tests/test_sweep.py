"""Sweeps through the command line: one folder per cell, resumable after SIGKILL, one table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedsim.sweep import CELLS_DIR, SUMMARY_FILE, TABLE_FILE
from tests.helpers import cli, rows

GRID = {"algorithm": [{"name": "fedavg"}, {"name": "fedprox", "mu": 0.01}], "seed": [0, 1]}


def sweep_folder(out: Path) -> Path:
    (found,) = [p for p in out.iterdir() if p.name.endswith(tuple("0123456789")) and "-sweep-" in p.name]
    return found


def cell_rows(sweep: Path) -> dict[str, list[dict]]:
    return {p.name: rows(p / "metrics.jsonl") for p in sorted((sweep / CELLS_DIR).iterdir())}


@pytest.mark.slow
def test_a_sweep_runs_every_cell_as_its_own_run_and_tabulates_mean_and_std(
    write_scenario, tmp_path: Path
) -> None:
    path = write_scenario({"rounds": 2, "sweep": GRID})
    res = cli("run", str(path), "--quiet")
    assert res.returncode == 0, res.stderr
    sweep = sweep_folder(tmp_path / "runs")
    assert res.stdout.strip().endswith(f"completed: 4/4 cells; results in {sweep}")
    cells = cell_rows(sweep)
    assert sorted(cells) == [
        "algorithm.mu=0.01,algorithm.name=fedprox,seed=0",  # the scenario file's keys were sorted
        "algorithm.mu=0.01,algorithm.name=fedprox,seed=1",
        "algorithm.name=fedavg,seed=0",
        "algorithm.name=fedavg,seed=1",
    ]
    # a cell is the same run as the scenario run on its own
    alone = cli("run", str(path), "--quiet", "--set", "sweep=null", "--set", "seed=1")
    assert alone.returncode == 0, alone.stderr
    (single,) = [p for p in (tmp_path / "runs").iterdir() if "-sweep-" not in p.name]
    assert rows(single / "metrics.jsonl") == cells["algorithm.name=fedavg,seed=1"]
    # the table: mean and population std over the seeds of each combination
    table = json.loads((sweep / SUMMARY_FILE).read_text())["table"]
    finals = [cells[f"algorithm.name=fedavg,seed={s}"][-1]["server_accuracy"] for s in (0, 1)]
    got = table["algorithm.name=fedavg"]["metrics"]["server_accuracy"]
    assert got["final_mean"] == pytest.approx(np.mean(finals)) and got["final_std"] == pytest.approx(
        np.std(finals)
    )
    assert got["n"] == 2
    best = [max(r["server_accuracy"] for r in cells[f"algorithm.name=fedavg,seed={s}"]) for s in (0, 1)]
    assert got["best_mean"] == pytest.approx(np.mean(best))
    md = (sweep / TABLE_FILE).read_text()
    assert "| metric | algorithm.name=fedavg (n=2) | algorithm.mu=0.01,algorithm.name=fedprox (n=2) |" in md
    assert (sweep / "report.html").read_text().count("<figure") >= 2
    # compare reads the sweep folder as its cells
    res = cli("compare", str(sweep), "--by-algorithm")
    assert res.returncode == 0 and "fedavg (n=2)" in res.stdout and "fedprox (n=2)" in res.stdout
    # resuming a finished sweep runs nothing
    res = cli("run", "--resume", str(sweep), "--quiet")
    assert res.returncode == 0 and "4 cells, 4 done, 0 to run" in res.stdout


@pytest.mark.slow
def test_a_sweep_killed_with_sigkill_finishes_with_resume_and_gives_the_same_table(
    write_scenario, tmp_path: Path
) -> None:
    """Against the same sweep run whole with its cells side by side (--jobs 3)."""
    path = write_scenario({"rounds": 4, "sweep": {"seed": [0, 1, 2]}, "output": {"checkpoint_every": 1}})
    whole = cli("run", str(path), "--quiet", "--jobs", "3", "--set", f"output.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsim.cli", "run", str(path), "--quiet", "--set", f"output.dir={out}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        process_group=0,
    )
    deadline = time.monotonic() + 120
    second = None
    while time.monotonic() < deadline:  # kill once the second cell has written a round
        if out.exists() and any(out.iterdir()):
            second = sweep_folder(out) / CELLS_DIR / "seed=1" / "metrics.jsonl"
            if second.exists() and len(second.read_text().splitlines()) >= 2:
                break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert second is not None and second.exists(), "the sweep never reached its second cell"
    sweep = sweep_folder(out)
    assert not (sweep / SUMMARY_FILE).exists()  # killed before the end
    res = cli("run", "--resume", str(sweep), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "3 cells, 1 done, 2 to run" in res.stdout
    assert cell_rows(sweep) == cell_rows(sweep_folder(tmp_path / "whole"))
    table = json.loads((sweep / SUMMARY_FILE).read_text())["table"]
    expected = json.loads((sweep_folder(tmp_path / "whole") / SUMMARY_FILE).read_text())["table"]
    assert table == expected


def test_a_bad_cell_stops_the_sweep_before_anything_is_written(write_scenario, tmp_path: Path) -> None:
    path = write_scenario({"sweep": {"algorithm": [{"name": "fedavg"}, {"name": "fedprox", "mu": "x"}]}})
    res = cli("run", str(path), "--quiet")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert (
        "[algorithm.mu=x,algorithm.name=fedprox]: algorithm.mu: Input should be a valid number" in res.stderr
    )
    assert not (tmp_path / "runs").exists()
