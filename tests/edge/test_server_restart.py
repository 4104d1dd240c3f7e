"""The tail server's lifecycle: SIGTERM drains it; a worker rides out a restart within its deadline."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsim.edge.worker.config import WorkerConfig
from fedsim.edge.worker.connection import backoff_s


def test_backoff_grows_with_jitter_and_the_retries_span_the_deadline() -> None:
    cfg = WorkerConfig(mode="split", timeout_s=5.0, retries=5, backoff_s=0.05, max_backoff_s=10.0)
    rng = random.Random(0)
    base = 5.0 / 31  # the five steps add up to the deadline
    for k in range(1, 6):
        waits = [backoff_s(k, cfg, rng) for _ in range(200)]
        step = base * 2 ** (k - 1)
        assert step / 2 <= min(waits) and max(waits) <= step  # equal jitter: half fixed, half drawn
        assert len(set(waits)) > 100  # drawn, not fixed
    assert sum(base * 2 ** (k - 1) for k in range(1, 6)) == pytest.approx(5.0)
    capped = WorkerConfig(mode="split", timeout_s=5.0, retries=5, backoff_s=0.05, max_backoff_s=1.0)
    assert backoff_s(5, capped, rng) <= 1.0
    short = WorkerConfig(mode="split", timeout_s=0.1, retries=8, backoff_s=0.05, max_backoff_s=1.0)
    assert backoff_s(1, short, rng) >= 0.025  # never below half of backoff_s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(model: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "fedsim.cli", "edge", "serve", str(model), "--port", str(port)]
    cmd += ["--workers", "2", "--grace-s", "3"]
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "server did not start"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)


@pytest.mark.slow
def test_a_server_restarted_under_load_loses_no_request(tiny_onnx: Path, tmp_path: Path) -> None:
    port, log = _free_port(), tmp_path / "server.log"
    server = _serve(tiny_onnx, port, log)
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "fedsim.cli", "edge", "worker", "--server", f"127.0.0.1:{port}"]
    cmd += ["--mode", "split", "--device", "jetson-nano", "--network", "wifi", "--requests", "400"]
    # waits are capped at 2 s (max_backoff_s), so 20 retries ride out about 20 s of outage
    # within the 30 s deadline; 6 retries covered only 4-8 s, less than a restart on a busy host
    cmd += ["--warmup", "1", "--timeout", "30", "--retries", "20", "--out", str(out)]
    worker = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    restarted = None
    try:
        rows = out / "split-jetson-nano-wifi-C1" / "requests.jsonl"
        deadline = time.monotonic() + 120
        while not rows.exists() or len(rows.read_text().splitlines()) < 20:  # under load
            assert worker.poll() is None, worker.stderr.read().decode() if worker.stderr else ""
            assert time.monotonic() < deadline, "the worker sent nothing"
            time.sleep(0.05)
        os.killpg(server.pid, signal.SIGTERM)
        assert server.wait(30) == 0
        down = time.monotonic()
        time.sleep(2.0)
        restarted = _serve(tiny_onnx, port, log)
        outage = time.monotonic() - down
        assert worker.wait(300) == 0, worker.stderr.read().decode() if worker.stderr else ""
        summary = json.loads((rows.parent / "summary.json").read_text())
        assert summary["requests"] == 400 and summary["ok"] == 400, summary["errors"]
        retried = [json.loads(line) for line in rows.read_text().splitlines()]
        assert max(r["attempts"] for r in retried) > 1 and outage < 20  # the outage cost retries only
        text = log.read_text()
        assert "SIGTERM received: stopping" in text
        assert "draining: health NOT_SERVING, new calls refused" in text and "stopped: " in text
    finally:
        for proc in (worker, server, restarted):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
