"""``fedsim edge serve | worker | health | bench`` as a user runs them (real processes, loopback)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import cli, only_run


@pytest.fixture
def served(tiny_onnx: Path, tmp_path: Path):
    """``fedsim edge serve`` in its own process group with a token; yields (address, token file)."""
    token = tmp_path / "token"
    token.write_text("abc123\n")
    port_file = tmp_path / "port"
    cmd = [sys.executable, "-m", "fedsim.cli", "edge", "serve", str(tiny_onnx), "--port", "0"]
    cmd += ["--port-file", str(port_file), "--token-file", str(token), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        yield f"127.0.0.1:{port_file.read_text().strip()}", token, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_serve_health_worker_and_clean_stop(served, tmp_path: Path) -> None:
    address, token, proc = served
    health = cli("edge", "health", "--server", address)
    assert health.returncode == 0 and f"{address}: SERVING" in health.stdout
    out = tmp_path / "results"
    args = ["edge", "worker", "--server", address, "--mode", "split", "--device", "jetson-nano"]
    args += ["--network", "lte", "--requests", "4", "--warmup", "1", "--meter", "auto", "--out", str(out)]
    ok = cli(*args, "--token-file", str(token))
    assert ok.returncode == 0, ok.stderr
    folder = out / "split-jetson-nano-lte-C1"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["ok"] == 4 and summary["meter"]["meter"] == "model"  # auto: no real meter here
    assert summary["shaper"]["name"] == "lte" and "p99" in ok.stdout
    assert len((folder / "requests.jsonl").read_text().splitlines()) == 4
    again = cli(*args, "--token-file", str(token))  # same folder: refused, nothing overwritten
    assert again.returncode == 2 and "already holds results" in again.stderr
    assert json.loads((folder / "summary.json").read_text()) == summary
    refused = cli(*args[:-2], "--out", str(tmp_path / "other"))
    assert refused.returncode == 2
    assert (
        refused.stderr.strip().count("\n") == 0 and "UNAUTHENTICATED: missing bearer token" in refused.stderr
    )
    traced = cli(
        *args[:8],
        "--trace",
        "wifi-3g-alternating",
        "--requests",
        "3",
        "--warmup",
        "1",
        "--out",
        str(out),
        "--token-file",
        str(token),
    )
    assert traced.returncode == 0, traced.stderr
    shaper = json.loads(
        (out / "split-jetson-nano-trace-wifi-3g-alternating-C1" / "summary.json").read_text()
    )["shaper"]
    assert shaper["name"] == "trace:wifi-3g-alternating" and shaper["trace_duration_s"] == 300
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(15) == 0
    log = proc.stdout.read().decode() if proc.stdout else ""
    assert "UNAUTHENTICATED" in log  # the refused call was logged


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["edge", "serve", "/nonexistent/models"], "no such folder"),
        (
            ["edge", "worker", "--mode", "split", "--server", "127.0.0.1:9", "--timeout", "0.5"],
            "no answer within",
        ),
        (["edge", "worker", "--mode", "offload"], "needs --server HOST:PORT"),
        (
            ["edge", "worker", "--mode", "split", "--server", "h:1", "--token-file", "/nope"],
            "--token-file /nope",
        ),
        (["edge", "health", "--server", "127.0.0.1:9", "--timeout", "0.3"], "edge server 127.0.0.1:9"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def _bench_file(tmp_path: Path, onnx: Path, **extra) -> Path:
    data = {
        "name": "tb",
        "model": {"onnx": str(onnx)},
        "devices": ["jetson-nano"],
        "networks": ["wifi", {"uplink_mbps": 2, "downlink_mbps": 8, "rtt_ms": 40}],
        "bottlenecks": [1],
        "requests": 3,
        "warmup": 1,
        "output": {"dir": str(tmp_path / "runs")},
        **extra,
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_bench_writes_every_configuration_and_the_comparison(tiny_onnx: Path, tmp_path: Path) -> None:
    res = cli("edge", "bench", str(_bench_file(tmp_path, tiny_onnx)), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    run = only_run(tmp_path / "runs")
    labels = sorted(p.name for p in (run / "workers").iterdir())
    assert labels == sorted(
        [
            "local-jetson-nano-none",
            "offload-jetson-nano-wifi",
            "split-jetson-nano-wifi-C1",
            "offload-jetson-nano-custom",
            "split-jetson-nano-custom-C1",
        ]
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and len(summary["workers"]) == 5
    comparison = json.loads((run / "comparison.json").read_text())
    assert [(r["network"], r["C"]) for r in comparison] == [("wifi", 1), ("custom", 1)]
    by = {w["label"]: w for w in summary["workers"]}
    row = comparison[0]
    split, local = by["split-jetson-nano-wifi-C1"], by["local-jetson-nano-none"]
    assert row["split_latency_ms"] == split["latency_ms"]["total"]["mean"]
    expected = 100 * (split["energy_J"]["total"] - local["energy_J"]["total"]) / local["energy_J"]["total"]
    assert row["energy_vs_local_pct"] == pytest.approx(expected)
    assert all(w["server_device"] == "gpu-server" and w["time_scale"] > 0 for w in summary["workers"])
    # the bench measured the host afresh, and every emulated worker used that measurement
    assert summary["calibration"]["host_ref_ms"] > 0
    assert all(w["calibration"] == summary["calibration"] for w in summary["workers"] if w["mode"] != "local")
    assert "BottleFit reports -89% latency" in res.stdout
    assert not list((run).glob("server.port")) or (run / "server.log").exists()


def test_bench_file_errors_name_the_key(tiny_onnx: Path, tmp_path: Path) -> None:
    from fedsim.edge.bench import configurations
    from fedsim.errors import UserError
    from fedsim.loader import load_bench

    for extra, message in (
        ({"devices": ["pixel"]}, "devices.0: unknown device profile 'pixel'"),
        ({"networks": ["5g"]}, "networks.0: unknown network profile '5g'"),
        ({"meter": "joulescope"}, "meter: Input should be 'auto', 'model', 'rapl', 'jtop', 'ina219'"),
        (
            {"model": {"onnx": "a", "run": "b"}},
            "model: expected exactly one of onnx, run, train, timing; got onnx, run",
        ),
    ):
        with pytest.raises(UserError, match=message):
            load_bench(_bench_file(tmp_path, tiny_onnx, **extra))
    with pytest.raises(UserError, match=r"bottlenecks \[9\] are not in the model; expected some of \[1, 3\]"):
        configurations(load_bench(_bench_file(tmp_path, tiny_onnx, bottlenecks=[9])), [1, 3])
    res = cli("edge", "bench", str(_bench_file(tmp_path, tiny_onnx, devices=["pixel"])), cwd=tmp_path)
    assert res.returncode == 2 and "unknown device profile 'pixel'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing written for a bad file


def test_timing_model_is_exported_once_and_served(tmp_path: Path) -> None:
    from fedsim.config import TimingSpec
    from fedsim.edge.bench import timing_model
    from fedsim.edge.server import ServedModel

    spec = TimingSpec(arch="resnet18", image_size=64, channels=[2], test_images=10)
    lines: list[str] = []
    folder = timing_model(spec, 0, lines.append)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["untrained"] and manifest["name"] == "resnet18-64-untrained"
    assert manifest["models"][0]["bottleneck_shape"] == [2, 9, 9]  # encoder output for a 64x64 input
    assert manifest["full"]["same_predictions"] == manifest["full"]["images"]
    served = ServedModel(folder)
    assert served.input_shape == (3, 64, 64) and sorted(served.tails) == [2]
    assert timing_model(spec, 0, lines.append) == folder and lines[-1].startswith("model: cached")
