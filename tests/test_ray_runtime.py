"""The ray runtime: Flower's Simulation Engine through flwr run, against inprocess."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from fedsim.apps import FLOWER_APP
from fedsim.runner import start_run
from tests.helpers import final_arrays, rows

QUIET = Console(quiet=True)


def test_pyproject_is_the_flower_app() -> None:
    import tomllib

    doc = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert doc["tool"]["flwr"]["app"] == FLOWER_APP


def leftover_processes(run: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(run) in line and "flower" in line]


@pytest.mark.slow
def test_tiny_ray_run_matches_inprocess(write_scenario) -> None:
    extra = {"rounds": 1, "clients": {"num": 2, "fraction": 1.0}, "output": {"checkpoint_every": 1}}
    inproc, _ = start_run(write_scenario(extra), [], None, False, False, QUIET)
    ray, summary = start_run(
        write_scenario(extra, name="ray.yaml"), ["runtime.name=ray"], None, False, False, QUIET
    )
    assert summary["status"] == "completed" and summary["runtime"] == "ray"
    wa, wb = final_arrays(inproc.path), final_arrays(ray.path)
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_allclose(wa[key], wb[key], atol=1e-5, rtol=0)
    ma, mb = rows(inproc.path / "metrics.jsonl"), rows(ray.path / "metrics.jsonl")
    assert [m["round"] for m in mb] == [0, 1]
    assert mb[-1]["server_accuracy"] == pytest.approx(ma[-1]["server_accuracy"], abs=1e-3)
    assert mb[-1]["bytes_down"] == ma[-1]["bytes_down"]  # same messages, same payload
    clients = [json.loads(x) for x in (ray.path / "clients.jsonl").read_text().splitlines()]
    assert sorted(c["partition_id"] for c in clients if c["phase"] == "train") == [0, 1]
    assert (ray.path / "flower" / "run.log").exists()
    assert not leftover_processes(ray.path)
