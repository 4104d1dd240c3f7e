"""The ray runtime: Flower's Simulation Engine through flwr run, against inprocess."""

from __future__ import annotations

import subprocess
from pathlib import Path

from rich.console import Console

from fedsim.apps import FLOWER_APP

QUIET = Console(quiet=True)


def test_pyproject_is_the_flower_app() -> None:
    import tomllib

    doc = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert doc["tool"]["flwr"]["app"] == FLOWER_APP


def leftover_processes(run: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(run) in line and "flower" in line]


# Joining a Ray cluster by address (runtime.ray.address, both engines) is tested on a two-node
# cluster in tests/test_ray_cluster.py.
