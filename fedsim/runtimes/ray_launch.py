"""The ``ray`` runtime: Flower's Simulation Engine, through ``flwr run``.

fedsim starts its own ``flower-superlink --simulation`` (with
``--disable-runtime-dependency-installation``, so the current environment is used
as is, with no build of a runtime environment) and a ``flower-superexec``, both in
one process group it owns, on a free loopback port, with a private ``FLWR_HOME``
inside the run folder. It then submits a generated app folder with ``flwr run``,
passing the scenario as a run-config TOML file, follows progress through the run
folder's metrics.jsonl, and ends the process group when the run is over.

``runtime.ray.address`` joins an existing Ray cluster (``RAY_ADDRESS`` of the
simulation process); without it the run gets a private local Ray instance even if
a cluster was started on this machine.

Logs: ``RUN/flower/superlink.log`` (SuperLink, SuperExec, Ray) and
``RUN/flower/run.log`` (the ServerApp's and ClientApps' output).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fedsim.apps import write_submission
from fedsim.errors import RunFailed, UserError
from fedsim.runstore import METRICS_FILE
from fedsim.runtimes.registry import RUNTIMES, LaunchRequest

FEDERATION = "fedsim"
BIN = Path(sys.executable).parent


#: How a ServerApp's log carries the reason a run failed, most specific first, and whether
#: that reason is the user's input: a client's exception as Flower reports it
#: (``<class 'X'>:<'message'>``), then the ServerApp's own.
_REASONS = (
    (re.compile(r"(?:PartitionFileError|UserError)'>:<'(.*)'>"), True),
    (re.compile(r"UserError: ([^\n]*)"), True),
    (re.compile(r"RunFailed: ([^\n]*)"), False),
)


def failure_reason(log: Path) -> tuple[str, bool] | None:
    """The most specific one-line reason of a failed run found in the ServerApp's log, and
    whether it is a problem with the user's input (a scenario or partition file)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    for pattern, users in _REASONS:
        found = pattern.findall(text)
        if found:
            return found[-1].strip().rstrip(".;,"), users
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(port: int) -> bool:
    """Whether the SuperLink we started answers ``GET /health`` on 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def check_ray_address(address: str | None, timeout: float = 5.0) -> None:
    """Fail with one line unless a Ray cluster's ``HOST:PORT`` accepts connections (``auto``: Ray checks)."""
    if address in (None, "auto", "local"):
        return
    host, sep, port = address.split("://")[-1].rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"ray address {address!r}: expected auto or HOST:PORT of the cluster's head")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); expected the head of "
            "'ray start --head' there (fix --ray-address or runtime.ray.address)"
        ) from None


class FlowerSimulation:
    """A private SuperLink + SuperExec in simulation mode, and the ``flwr`` calls to use it."""

    def __init__(self, work: Path, ray_address: str | None) -> None:
        self.work = work
        self.home = work / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.env = {
            **os.environ,
            "FLWR_HOME": str(self.home),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "RAY_ADDRESS": ray_address or "local",
            "RAY_DEDUP_LOGS": "0",
        }
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{FEDERATION}"\n\n'
            f'[superlink.{FEDERATION}]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the SuperLink and SuperExec and wait until the SuperLink is healthy."""
        log = open(self.work / "superlink.log", "wb")  # noqa: SIM115 - kept open for the children
        addr = f"127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(
            [str(BIN / "flower-superlink"), "--insecure", "--simulation", "--isolation", "process",
             "--disable-runtime-dependency-installation", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, cwd=self.work, stdout=log, stderr=subprocess.STDOUT, process_group=0,
        )  # fmt: skip
        subprocess.Popen(
            [str(BIN / "flower-superexec"), "--insecure", "--runtime-api-address", addr,
             "--parent-pid", str(self._proc.pid)],
            env=self.env, cwd=self.work, stdout=log, stderr=subprocess.STDOUT, process_group=self._proc.pid,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RunFailed(f"flower-superlink exited with {self._proc.returncode}", Path(log.name))
            if _healthy(self.port):
                return
            time.sleep(0.05)
        raise RunFailed(f"flower-superlink not healthy after {timeout:.0f} s", Path(log.name))

    def flwr(self, *args: str) -> dict[str, Any]:
        """Call the ``flwr`` CLI with JSON output (its exit code is 0 even on errors)."""
        res = subprocess.run(
            [str(BIN / "flwr"), *args, "--format", "json"],
            env=self.env,
            cwd=self.work,
            capture_output=True,
            text=True,
        )
        try:
            return json.loads(res.stdout)
        except json.JSONDecodeError:
            return {"success": False, "error-message": (res.stdout + res.stderr)[-2000:]}

    def log_follower(self, run_id: str) -> subprocess.Popen[bytes]:
        """``flwr log --stream`` into run.log; the process ends when the run finishes."""
        out = open(self.work / "run.log", "wb")  # noqa: SIM115 - kept open for the child
        return subprocess.Popen(
            [str(BIN / "flwr"), "log", run_id, FEDERATION, "--stream"],
            env=self.env, cwd=self.work, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def status(self, run_id: str) -> tuple[str, str]:
        """(status, details) of a run, e.g. ("finished:completed", "")."""
        runs = self.flwr("ls", FEDERATION, "--run-id", run_id).get("runs") or [{}]
        return str(runs[0].get("status", "unknown")), str(runs[0].get("status-details", ""))

    def stop(self) -> None:
        """End the whole process group (SIGTERM, then SIGKILL for Ray's agents)."""
        if self._proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self._proc.pid, sig)
            except ProcessLookupError:
                break
            if sig == signal.SIGTERM:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(5)
                time.sleep(1.0)
        self._proc.wait()
        self._proc = None


def follow_run(request: LaunchRequest, sim: FlowerSimulation, run_id: str) -> None:
    """Feed the callbacks each new metrics row until ``flwr log --stream`` ends (the run is over)."""
    follower = sim.log_follower(run_id)
    metrics, seen, told = request.folder.path / METRICS_FILE, 0, None
    try:
        while follower.poll() is None:
            nodes = request.folder.waiting()
            if nodes is not None and nodes != told:  # the ServerApp waits for its nodes
                told = nodes
                print(
                    f"waiting for nodes: {nodes['connected']} of {nodes['needed']} connected "
                    f"(up to runtime.deployment.wait_s={nodes['wait_s']:g} s)",
                    file=sys.stderr,
                    flush=True,
                )
            if metrics.exists():
                rows = request.folder.read(METRICS_FILE)
                for row in rows[seen:]:
                    for cb in request.callbacks:
                        cb.update(row)
                seen = len(rows)
            time.sleep(0.2)
    except KeyboardInterrupt:
        sim.flwr("stop", run_id, FEDERATION)
        raise
    finally:
        if follower.poll() is None:
            follower.terminate()
    for row in request.folder.read(METRICS_FILE)[seen:]:
        for cb in request.callbacks:
            cb.update(row)


def finish(request: LaunchRequest, link: FlowerSimulation, run_id: str, where: str) -> None:
    """Follow a submitted run to its end; a run that did not complete raises :class:`RunFailed`."""
    follow_run(request, link, run_id)
    status, details = link.status(run_id)
    if status == "finished:completed":
        return
    log = link.work / "run.log"
    reason, users = failure_reason(log) or (details or "no reason given", False)
    if str(request.folder.path) in reason:  # the ServerApp could not write the run folder
        reason += "; the ServerApp writes it on the SuperLink's machine: submit from a machine sharing it"
    message = f"Flower run {run_id} {where} ended as {status}: {reason}"
    if users:
        raise UserError(f"{message}; see {log}")
    raise RunFailed(message, log)


@RUNTIMES.register(
    "ray",
    summary="Ray: Flower's Simulation Engine (engine: flower) or fedsim's workers as actors (engine: fedsim)",
)
def launch(request: LaunchRequest) -> None:
    """Run the scenario on Flower's Simulation Engine; results land in the run folder."""
    sc = request.scenario
    check_ray_address(sc.runtime.ray.address)
    if sc.runtime.engine == "fedsim":
        from fedsim.runtimes.ray_engine import launch_fedsim_engine

        launch_fedsim_engine(request)
        return
    work = request.folder.path / "flower"
    app_dir, overrides = write_submission(work, request.run_config())
    sim = FlowerSimulation(work, sc.runtime.ray.address)
    federation = (
        f"num-supernodes={sc.clients.num} client-resources-num-cpus={sc.runtime.ray.num_cpus} "
        f"client-resources-num-gpus={float(sc.runtime.ray.num_gpus)}"
    )
    try:
        sim.start()
        res = sim.flwr(
            "run", str(app_dir), FEDERATION, "--federation-config", federation, "--run-config", str(overrides)
        )
        if not res.get("success"):
            raise RunFailed(f"flwr run refused the run: {res.get('error-message')}", work / "superlink.log")
        finish(request, sim, str(res["run-id"]), "on the Simulation Engine")
    finally:
        sim.stop()
