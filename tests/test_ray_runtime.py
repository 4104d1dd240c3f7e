"""The ray runtime: Flower's Simulation Engine through flwr run, against inprocess."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from fedsim.apps import FLOWER_APP
from fedsim.runner import start_run

QUIET = Console(quiet=True)


def test_pyproject_is_the_flower_app() -> None:
    import tomllib

    doc = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert doc["tool"]["flwr"]["app"] == FLOWER_APP


def leftover_processes(run: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(run) in line and "flower" in line]


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
