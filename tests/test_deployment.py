"""The deployment runtime against real processes: docker-compose.yml's topology on loopback.

The SuperLink and SuperNode commands are read from docker-compose.yml (and
docker-compose.tls.yml), their container paths mapped to this test's files through each
service's volumes and their ports to free loopback ports; each runs in its own process
group, which is ended at the end even on failure. The services' own health checks decide
when the topology is up.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.helpers import cli

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "FLWR_TELEMETRY_ENABLED": "0",
    "OMP_NUM_THREADS": "1",
}
#: The tiny scenario exported and run (two clients, one round, no client evaluation:
#: every message starts a ClientApp process on a SuperNode, which costs seconds).
TINY = {
    "name": "deploy-tiny",
    "seed": 5,
    "rounds": 1,
    "data": {"dataset": "digits", "partition": {"name": "dirichlet", "alpha": 0.5}},  # 956 / 481 samples
    "model": {"name": "cnn", "channels": [8, 16], "feature_dim": 32},
    "clients": {"num": 2},
    "train": {"batch_size": 16, "local_epochs": 2, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.5}},
    "evaluation": {"server_every": 1, "clients_every": 0},
}


def compose_services(*files: str) -> dict[str, dict[str, Any]]:
    """Services of compose files merged the way ``docker compose -f A -f B`` merges them."""
    services: dict[str, dict[str, Any]] = {}
    for name in files:
        for svc, spec in yaml.safe_load((ROOT / name).read_text())["services"].items():
            merged = dict(services.get(svc, {}))
            for key, value in spec.items():
                if key == "volumes":  # merged by container path
                    targets = {v.split(":")[1] for v in value}
                    merged[key] = [v for v in merged.get(key, []) if v.split(":")[1] not in targets] + value
                elif isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
            services[svc] = merged
    return services


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Topology:
    """docker-compose.yml's services as local processes."""

    services: dict[str, dict[str, Any]]
    host_dirs: dict[str, Path]  # compose-relative source ("./certs") -> local folder
    ports: dict[tuple[str, str], int]  # (service, container port) -> local port
    procs: list[subprocess.Popen[bytes]]
    logs: Path

    def localise(self, service: str, args: list[str]) -> list[str]:
        """A service's command (or health check) with this machine's paths, hosts and ports."""
        out = []
        mounts = [v.split(":")[:2] for v in self.services[service].get("volumes", [])]
        for arg in args:
            for src, dst in mounts:
                if src.startswith("./"):
                    top, _, rest = src[2:].partition("/")
                    local = self.host_dirs[f"./{top}"] / rest if rest else self.host_dirs[f"./{top}"]
                    arg = re.sub(rf"{re.escape(dst)}(?=$|[/\"'])", str(local), arg)
            arg = re.sub(r"^superlink:(\d+)$", lambda m: f"127.0.0.1:{self.ports['superlink', m[1]]}", arg)
            arg = re.sub(
                r"(127\.0\.0\.1|localhost):(\d+)",
                lambda m: f"{m[1]}:{self.ports.get((service, m[2]), m[2])}",
                arg,
            )
            out.append("127.0.0.1" if arg == "0.0.0.0" else arg)
        for i, arg in enumerate(out[:-1]):
            if arg == "--port":
                out[i + 1] = str(self.ports[service, out[i + 1]])
        return out

    def start(self, service: str) -> None:
        """Start a service's command in its own process group."""
        args = self.localise(service, list(self.services[service]["command"]))
        log = open(self.logs / f"{service}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs.append(
            subprocess.Popen(
                [str(BIN / args[0]), *args[1:]],
                env={**ENV, "FLWR_HOME": str(self.logs / f"home-{service}")},
                cwd=self.logs,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        )

    def wait_healthy(self, service: str, timeout: float = 60.0) -> None:
        """Run the service's own health check until it passes."""
        test = self.localise(service, list(self.services[service]["healthcheck"]["test"]))
        assert test[0] == "CMD"
        argv = [sys.executable if test[1] == "python" else str(BIN / test[1]), *test[2:]]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if subprocess.run(argv, env=ENV, capture_output=True, timeout=30).returncode == 0:
                return
            time.sleep(0.5)
        raise AssertionError(f"{service} not healthy after {timeout} s; see {self.logs}/{service}.log")

    def stop(self) -> None:
        """End every process group (SIGTERM, then SIGKILL)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in self.procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
            if sig == signal.SIGTERM:
                time.sleep(1.0)
        for proc in self.procs:
            proc.wait()


def start_topology(tmp: Path, files: tuple[str, ...], certs: Path | None) -> Topology:
    """Export TINY's partitions and start the SuperLink and both SuperNodes of ``files``."""
    scenario = tmp / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(TINY))
    res = cli("data", "export", str(scenario), str(tmp / "partitions"), "--set", "clients.num=2")
    assert res.returncode == 0, res.stderr
    services = compose_services(*files)
    ports = {("superlink", "9093"): free_port()}
    ports |= {(svc, "9094"): free_port() for svc in services if svc.startswith("supernode-")}
    logs = tmp / "logs"
    logs.mkdir()
    dirs = {"./partitions": tmp / "partitions", "./certs": certs or tmp / "certs", "./onnx": tmp / "onnx"}
    topo = Topology(services, dirs, ports, [], logs)
    try:
        topo.start("superlink")
        topo.wait_healthy("superlink")
        for svc in ("supernode-0", "supernode-1"):
            topo.start(svc)
        for svc in ("supernode-0", "supernode-1"):
            topo.wait_healthy(svc)
    except BaseException:
        topo.stop()
        raise
    return topo


def submit(topo: Topology, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The compose file's ``fedsim`` service command, on the tiny scenario, into ``out``."""
    args = topo.localise("fedsim", list(topo.services["fedsim"]["command"]))
    assert args[:2] == ["fedsim", "run"]
    args[2] = str(topo.logs.parent / "tiny.yaml")
    args = [a.replace("output.dir=/runs", f"output.dir={out}") for a in args]
    return cli(*args[1:], *extra, cwd=topo.logs.parent, timeout=240)


def only_run(out: Path) -> Path:
    found = [p for p in out.iterdir() if p.is_dir()]
    assert len(found) == 1, found
    return found[0]


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_complete(run: Path, partitions: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["runtime"] == "deployment"
    metrics = jsonl(run / "metrics.jsonl")
    assert [m["round"] for m in metrics] == [0, 1]
    assert metrics[-1]["clients_ok"] == 2
    assert metrics[-1]["server_accuracy"] > metrics[0]["server_accuracy"] + 0.3  # 0.10 -> 0.83 in-process
    train = [c for c in jsonl(run / "clients.jsonl") if c["phase"] == "train"]
    assert sorted((c["round"], c["partition_id"]) for c in train) == [(1, 0), (1, 1)]
    # each SuperNode trained on its own file: the (unequal) sizes of the exported partitions
    sizes = {c["partition_id"]: c["num_examples"] for c in train}
    for pid in (0, 1):
        with np.load(partitions / f"client-{pid}.npz") as npz:
            assert sizes[pid] == len(npz["y_train"])
    assert sizes[0] != sizes[1]
    assert (run / "flower" / "home" / "config.toml").exists()  # a private FLWR_HOME


@pytest.fixture(scope="module")
def insecure_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    topo = start_topology(tmp_path_factory.mktemp("plain"), ("docker-compose.yml",), None)
    try:
        yield topo
    finally:
        topo.stop()


@pytest.fixture(scope="module")
def tls_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    tmp = tmp_path_factory.mktemp("tls")
    res = subprocess.run(
        [str(ROOT / "scripts" / "gen-certs.sh"), str(tmp / "certs"), "localhost", "127.0.0.1"],
        env={**ENV, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    topo = start_topology(tmp, ("docker-compose.yml", "docker-compose.tls.yml"), tmp / "certs")
    try:
        yield topo
    finally:
        topo.stop()


@pytest.mark.slow
def test_compose_topology_runs_a_scenario(tmp_path: Path, insecure_topology: Topology) -> None:
    res = submit(insecure_topology, tmp_path / "runs")
    assert res.returncode == 0, res.stdout + res.stderr
    run = only_run(tmp_path / "runs")
    check_complete(run, insecure_topology.logs.parent / "partitions")
    # the same model as the in-process runtime (same scenario and seed)
    tiny = str(insecure_topology.logs.parent / "tiny.yaml")
    res = cli("run", tiny, "--set", "clients.num=2", "--set", f"output.dir={tmp_path / 'ref'}", "-q")
    assert res.returncode == 0, res.stderr
    deployed, local = (
        jsonl(run / "metrics.jsonl")[-1],
        jsonl(only_run(tmp_path / "ref") / "metrics.jsonl")[-1],
    )
    assert deployed["server_accuracy"] == pytest.approx(local["server_accuracy"], abs=1e-3)
    assert deployed["bytes_down"] == local["bytes_down"]


@pytest.mark.slow
def test_missing_supernodes_are_counted_then_one_line_after_wait_s(
    tmp_path: Path, insecure_topology: Topology
) -> None:
    # two SuperNodes run; the scenario needs three
    t0 = time.monotonic()
    res = submit(
        insecure_topology, tmp_path / "runs", "--set", "clients.num=3", "--set", "runtime.deployment.wait_s=4"
    )
    assert res.returncode == 1 and time.monotonic() - t0 < 120
    assert "waiting for nodes: 2 of 3 connected (up to runtime.deployment.wait_s=4 s)" in res.stderr
    assert (
        "only 2 of the 3 nodes the scenario needs (clients.num) connected within 4 s; 1 missing" in res.stderr
    )
    assert "Traceback" not in res.stderr
    summary = json.loads((only_run(tmp_path / "runs") / "summary.json").read_text())
    assert summary["status"] == "failed" and "1 missing" in summary["error"]


@pytest.mark.slow
def test_a_supernode_killed_mid_run(tmp_path: Path) -> None:
    (tmp_path / "topo").mkdir()
    topo = start_topology(tmp_path / "topo", ("docker-compose.yml",), None)
    try:
        args = topo.localise("fedsim", list(topo.services["fedsim"]["command"]))
        args[2] = str(topo.logs.parent / "tiny.yaml")
        args = [a.replace("output.dir=/runs", f"output.dir={tmp_path / 'runs'}") for a in args]
        extra = ["--set", "rounds=2", "--set", "clients.min=1", "--set", "evaluation.clients_every=0"]
        run = subprocess.Popen(
            [str(BIN / "fedsim"), *args[1:], *extra],
            env=ENV,
            cwd=topo.logs.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            process_group=0,
        )
        deadline = time.monotonic() + 120
        while True:
            found = list((tmp_path / "runs").glob("*/metrics.jsonl")) if (tmp_path / "runs").exists() else []
            if found and len(found[0].read_text().splitlines()) >= 2:  # round 1 is done
                break
            assert run.poll() is None, run.stderr.read() if run.stderr else ""
            assert time.monotonic() < deadline, "round 1 did not finish"
            time.sleep(0.2)
        os.killpg(topo.procs[2].pid, signal.SIGKILL)  # supernode-1, mid-run
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        folder = found[0].parent
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["rounds_completed"] == 2  # with the other node
        rows = {(r["round"], r["partition_id"]): r for r in jsonl(folder / "clients.jsonl")}
        assert sorted(rows) == [(r, p) for r in (1, 2) for p in (0, 1)]
        assert "error" not in rows[1, 1] and all("error" not in rows[r, 0] for r in (1, 2))
        # the dead node's round: failed, with the SuperLink's reason
        assert rows[2, 1]["error"].startswith("Error: Node Unavailable")
        metrics = jsonl(folder / "metrics.jsonl")
        assert [m["clients_ok"] for m in metrics[1:]] == [2, 1]
    finally:
        topo.stop()


@pytest.mark.slow
def test_partitions_of_another_scenario_are_refused(tmp_path: Path, insecure_topology: Topology) -> None:
    # the SuperNodes hold partitions of seed 5; a run of seed 6 is refused by the clients
    res = submit(insecure_topology, tmp_path / "runs", "--set", "seed=6")
    assert res.returncode == 2
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in res.stderr
    assert "belongs to scenario 'deploy-tiny'" in err and "fedsim data export" in err
    summary = json.loads((only_run(tmp_path / "runs") / "summary.json").read_text())
    assert summary["status"] == "failed" and "belongs to scenario" in summary["error"]


@pytest.mark.slow
def test_tls_topology_refuses_a_wrong_ca_in_one_line(tmp_path: Path, tls_topology: Topology) -> None:
    other = tmp_path / "other-ca"
    res = subprocess.run(
        [str(ROOT / "scripts" / "gen-certs.sh"), str(other)], env=ENV, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    res = submit(
        tls_topology, tmp_path / "runs", "--set", f"runtime.deployment.root_certificates={other}/ca.crt"
    )
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "does not verify" in res.stderr and "ca.crt" in res.stderr
    assert json.loads((only_run(tmp_path / "runs") / "summary.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_tls_topology_runs_a_scenario(tmp_path: Path, tls_topology: Topology) -> None:
    res = submit(tls_topology, tmp_path / "runs")  # the compose command: /certs/ca.crt
    assert res.returncode == 0, res.stdout + res.stderr
    run = only_run(tmp_path / "runs")
    check_complete(run, tls_topology.logs.parent / "partitions")
    assert "root-certificates" in (run / "flower" / "home" / "config.toml").read_text()


def test_unreachable_superlink_is_one_line(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(yaml.safe_dump({**TINY, "output": {"dir": str(tmp_path / "runs")}}))
    port = free_port()  # nothing listens there
    res = cli("run", str(scenario), "--runtime", "deployment", "--superlink", f"127.0.0.1:{port}", "-q")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert f"cannot reach the SuperLink at 127.0.0.1:{port}" in res.stderr and "Traceback" not in res.stderr
    summary = json.loads((only_run(tmp_path / "runs") / "summary.json").read_text())
    assert summary["status"] == "failed" and "cannot reach" in summary["error"]


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ([], "needs the SuperLink's address"),
        (["--superlink", "nohostport"], "expected HOST:PORT"),
        (
            ["--superlink", "127.0.0.1:1", "--set", "runtime.deployment.root_certificates=missing.crt"],
            "not found",
        ),
    ],
)
def test_bad_superlink_options_are_one_line(tmp_path: Path, flag: list[str], expected: str) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(yaml.safe_dump({**TINY, "output": {"dir": str(tmp_path / "runs")}}))
    res = cli("run", str(scenario), "--runtime", "deployment", *flag, "-q", cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert expected in res.stderr
    assert json.loads((only_run(tmp_path / "runs") / "summary.json").read_text())["status"] == "failed"


#: A tiny BottleFit experiment: exported to ONNX, it is what the compose file's edge service serves.
EDGE_EXPERIMENT = {
    "name": "edge-tiny",
    "seed": 2,
    "data": {"dataset": "shapes", "options": {"image_size": 32, "num_train": 120, "num_test": 60}},
    "teacher": {"width": 8, "train": {"epochs": 1}},
    "bottleneck_channels": [1],
    "stage1": {"epochs": 1},
    "stage2": {"epochs": 1, "mode": "ft"},
}


def edge_serve_exists() -> bool:
    return cli("edge", "serve", "--help").returncode == 0


@pytest.mark.slow
def test_compose_edge_service_passes_its_health_check_plain_and_tls(tmp_path: Path) -> None:
    if not edge_serve_exists():
        pytest.skip("fedsim edge serve does not exist yet (the edge tail server is being added)")
    exp = tmp_path / "edge.yaml"
    exp.write_text(yaml.safe_dump({**EDGE_EXPERIMENT, "output": {"dir": str(tmp_path / "eruns")}}))
    assert cli("edge", "train", str(exp), "--threads", "1", cwd=tmp_path).returncode == 0
    (run,) = (tmp_path / "eruns").iterdir()
    res = cli("edge", "export", str(run), "--out", str(tmp_path / "onnx"))
    assert res.returncode == 0, res.stderr
    certs = tmp_path / "certs"
    subprocess.run(
        [str(ROOT / "scripts" / "gen-certs.sh"), str(certs)], env=ENV, check=True, capture_output=True
    )
    for files in [("docker-compose.yml",), ("docker-compose.yml", "docker-compose.tls.yml")]:
        logs = tmp_path / f"logs-{len(files)}"
        logs.mkdir()
        dirs = {"./onnx": tmp_path / "onnx", "./certs": certs}
        topo = Topology(compose_services(*files), dirs, {("edge", "50051"): free_port()}, [], logs)
        try:
            topo.start("edge")
            topo.wait_healthy("edge")
        finally:
            topo.stop()
