"""Same scenario and seed: bit-identical metrics and weights; resume == uninterrupted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from fedsim.runner import resume_run, start_run
from tests.helpers import final_arrays, rows

QUIET = Console(quiet=True)


def run_once(path: Path, stop_after: int | None = None) -> Path:
    folder, _ = start_run(path, [], stop_after, False, False, QUIET)
    return folder.path


@pytest.mark.slow
def test_two_runs_bit_identical(write_scenario) -> None:
    path = write_scenario({"algorithm": {"name": "fedprox", "mu": 0.1}})
    a, b = run_once(path), run_once(path)
    assert a != b
    assert rows(a / "metrics.jsonl") == rows(b / "metrics.jsonl")
    assert rows(a / "clients.jsonl") == rows(b / "clients.jsonl")
    wa, wb = final_arrays(a), final_arrays(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key])


@pytest.mark.slow
def test_other_seed_differs(write_scenario, tmp_path: Path) -> None:
    a = run_once(write_scenario({"rounds": 1}))
    b = run_once(write_scenario({"rounds": 1, "seed": 4}, name="other.yaml"))
    assert rows(a / "metrics.jsonl") != rows(b / "metrics.jsonl")


@pytest.mark.slow
def test_resume_equals_uninterrupted(write_scenario) -> None:
    path = write_scenario({"rounds": 4, "output": {"checkpoint_every": 2}})
    full = run_once(path)
    part = run_once(path, stop_after=3)  # checkpoint at 2; round 3 is lost work
    assert [r["round"] for r in rows(part / "metrics.jsonl")] == [0, 1, 2, 3]
    _folder, summary = resume_run(part, None, None, False, False, QUIET)
    assert summary["status"] == "completed"
    assert rows(part / "metrics.jsonl") == rows(full / "metrics.jsonl")
    assert rows(part / "clients.jsonl") == rows(full / "clients.jsonl")
    for key, value in final_arrays(full).items():
        np.testing.assert_array_equal(value, final_arrays(part)[key])
