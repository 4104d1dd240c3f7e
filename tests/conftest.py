"""Shared fixtures: tiny scenarios written to a temporary folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Generated artefacts (SSE-C, teachers) cached in a folder of the test session."""
    import os

    old = os.environ.get("FEDSIM_CACHE")
    os.environ["FEDSIM_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("FEDSIM_CACHE", None)
    else:
        os.environ["FEDSIM_CACHE"] = old


TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 3,
    "rounds": 3,
    "data": {"dataset": "digits", "partition": {"name": "dirichlet", "alpha": 0.5}},
    "model": {"name": "cnn", "channels": [8, 16], "feature_dim": 32},
    "algorithm": {"name": "fedavg"},
    "clients": {"num": 6, "fraction": 0.5, "min": 2},
    "train": {"local_epochs": 1, "batch_size": 16, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.5}},
    "evaluation": {"server_every": 1, "clients_every": 1},
    "output": {"checkpoint_every": 1},
}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (extra wins)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture
def write_scenario(tmp_path: Path):
    """Write a scenario (TINY merged with overrides) and return its path."""

    def _write(extra: dict[str, Any] | None = None, name: str = "scenario.yaml") -> Path:
        data = merge(TINY, {"output": {"dir": str(tmp_path / "runs")}})
        data = merge(data, extra or {})
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return _write


@pytest.fixture
def server_identity():
    """The task identity Flower gives a ServerApp process (needed to build Messages)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    yield


#: Modules whose tests start whole topologies (SuperLink and SuperNodes, a Ray cluster, every
#: documented command), by xdist group: `make test` runs each group's tests one after another
#: on one xdist worker, beside the other tests (dealt out to whichever worker is free).
SERIAL_GROUPS = {
    "test_readme.py": "readme",
    "test_deployment.py": "topologies",
    "test_ray_cluster.py": "ray-cluster",
    "test_compose.py": "topologies",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the tests of :data:`SERIAL_GROUPS` in their xdist groups (``--dist loadgroup``)."""
    for item in items:
        group = SERIAL_GROUPS.get(item.path.name)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
