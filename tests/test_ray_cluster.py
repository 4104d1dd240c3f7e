"""Multi-node Ray: ``fedsim run --runtime ray --ray-address HOST:PORT`` on a two-node cluster.

A head (``ray start --head``) and a second node joined to it run on this machine, on
loopback, with their own temporary folder, each with one CPU and a custom resource of
its own (``head``, ``worker2``). Flower's Ray backend places one client actor per CPU, so
client work runs on both nodes; the GCS actor table says where each actor lived. The
cluster is stopped by ending the two ``ray start --block`` process groups (never
``ray stop``, which would end other Ray instances on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers import cli
from tests.helpers import rows as rows_of

RAY = str(Path(sys.executable).parent / "ray")
#: Node id by custom resource, and the nodes of every client actor (ClientAppActor).
PROBE = """
import json, ray, ray._private.state as state
ray.init(address={address!r}, logging_level="ERROR")
alive = [n for n in ray.nodes() if n["Alive"]]
nodes = {{r: n["NodeID"] for n in alive for r in ("head", "worker2") if r in n["Resources"]}}
def on(name):
    return [a["Address"]["NodeID"] for a in state.actors().values() if name in a["ActorClassName"]]
print(json.dumps({{"nodes": nodes, "actors": on("ClientAppActor"), "shards": on("ShardHost")}}))
"""


def probe(address: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(address=address)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def two_node_cluster() -> Iterator[str]:
    """``ray start --head`` and a second ``ray start --address`` node, each in its own process group."""
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths are length-limited
    env = {**os.environ, "RAY_TMPDIR": tmp}
    common = ["--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    address = f"127.0.0.1:{port}"
    procs = [
        subprocess.Popen(
            [RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", tmp,
             "--resources", '{"head": 1}', *common],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0,
        )
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert time.monotonic() < deadline, "ray head did not start"
            time.sleep(0.3)
        procs.append(
            subprocess.Popen(
                [RAY, "start", "--address", address, "--resources", '{"worker2": 1}', *common],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0,
            )
        )  # fmt: skip
        while len(probe(address)["nodes"]) < 2:
            assert time.monotonic() < deadline, "second ray node did not join"
            time.sleep(1.0)
        yield address
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in reversed(procs):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
            time.sleep(1.0)
        for proc in procs:
            proc.wait()


@pytest.mark.slow
def test_ray_address_runs_clients_on_both_nodes(tmp_path: Path, two_node_cluster: str) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {
                "name": "cluster",
                "rounds": 1,
                "data": {"dataset": "digits"},
                "model": {"name": "cnn", "channels": [8, 16], "feature_dim": 32},
                "clients": {"num": 4},
                "evaluation": {"clients_every": 0},
                "output": {"dir": str(tmp_path / "runs")},
            }
        )
    )
    res = cli("run", str(scenario), "--runtime", "ray", "--ray-address", two_node_cluster, "-q", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["runtime"] == "ray"
    scenario_yaml = yaml.safe_load((run / "scenario.yaml").read_text())
    assert scenario_yaml["runtime"]["ray"]["address"] == two_node_cluster
    rows = [json.loads(line) for line in (run / "clients.jsonl").read_text().splitlines()]
    assert sorted(r["partition_id"] for r in rows if r["phase"] == "train") == [0, 1, 2, 3]

    state = probe(two_node_cluster)
    assert set(state["actors"]) == {state["nodes"]["head"], state["nodes"]["worker2"]}

    # engine fedsim: fedsim's workers as Ray actors, one per cluster CPU, spread over both nodes,
    # with the results of one process
    common = ["--set", "evaluation.server_every=1", "--set", "runtime.threads=1", "-q"]
    args = ["--runtime", "ray", "--ray-address", two_node_cluster, "--set", "runtime.engine=fedsim"]
    res = cli("run", str(scenario), *args, "--set", "runtime.workers=0", *common, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    res = cli("run", str(scenario), "--set", f"output.dir={tmp_path / 'here'}", *common, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (ours,) = [r for r in (tmp_path / "runs").iterdir() if r != run]
    (here,) = (tmp_path / "here").iterdir()
    summary = json.loads((ours / "summary.json").read_text())
    assert (summary["runtime"], summary["engine"], summary["workers"]) == ("ray", "fedsim", 2)
    for name in ("metrics.jsonl", "clients.jsonl"):
        assert rows_of(ours / name) == rows_of(here / name)
    state = probe(two_node_cluster)
    assert sorted(state["shards"]) == sorted([state["nodes"]["head"], state["nodes"]["worker2"]])


def test_unreachable_ray_address_is_one_line(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(yaml.safe_dump({"name": "x", "rounds": 1, "output": {"dir": str(tmp_path / "runs")}}))
    port = free_port()
    res = cli(
        "run", str(scenario), "--runtime", "ray", "--ray-address", f"127.0.0.1:{port}", "-q", timeout=300
    )
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"127.0.0.1:{port}" in res.stderr and "Traceback" not in res.stderr
