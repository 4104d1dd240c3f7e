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


@pytest.fixture
def ray_cluster():
    """A real one-node Ray cluster (``ray start --head --block``) in its own process group."""
    import os
    import signal
    import socket
    import sys
    import tempfile
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths are length-limited
    env = {**os.environ, "RAY_TMPDIR": tmp}
    ray_bin = str(Path(sys.executable).parent / "ray")
    proc = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
         "--node-ip-address", "127.0.0.1",
         "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", tmp],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        time.sleep(2)
        yield address
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(1)
        proc.wait()


@pytest.mark.slow
def test_ray_address_joins_existing_cluster(write_scenario, ray_cluster: str) -> None:
    path = write_scenario({"rounds": 1, "clients": {"num": 2}})
    _folder, summary = start_run(
        path, ["runtime.name=ray", f"runtime.ray.address={ray_cluster}"], None, False, False, QUIET
    )
    assert summary["status"] == "completed"
    code = (
        "import ray, ray._private.state as s; "
        f"ray.init(address='{ray_cluster}', logging_level='ERROR'); "
        "print([j.get('Entrypoint', '') for j in s.jobs()])"
    )
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "flwr-simulation" in out  # the simulation ran as a job of this cluster
