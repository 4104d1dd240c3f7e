"""``fedsim edge bench``: local computing vs edge offloading vs split computing, on one machine.

A bench file names the model (an ONNX folder, an edge run, an edge experiment that is
trained once and cached by content, or an untrained ImageNet-size model for timing), the
server (its emulated device), and the grid of modes x devices x networks x bottleneck
widths C. The bench starts ``fedsim edge serve``
as a separate process (so the device's power model sees only the worker's CPU), measures
this host's speed afresh (:func:`fedsim.edge.calibrate.calibrate`, so the emulated devices' time
scale reflects the machine's load now), runs a
:class:`~fedsim.edge.worker.Worker` per configuration, and writes a run folder::

    RUN/bench.yaml               the resolved bench file
    RUN/workers/<label>/         requests.jsonl + summary.json per configuration
    RUN/comparison.json          split against local and against offload, per device x network x C
                                 (summary.json's ``adaptive``: adaptive against every fixed mode)

With ``traces:`` the remote modes also run on each bandwidth trace, one pass with a request
every ``trace_interval_s`` of trace time; ``modes: [..., adaptive]`` runs the adaptive worker
once per entry of ``objectives``.
    RUN/summary.json             status, model, server, the worker summaries
    RUN/report.html              the dashboard

Example
-------
.. code-block:: yaml

    kind: edge-bench
    name: edge_bench_shapes
    model: {train: bottlefit_shapes.yaml, set: [stage1.epochs=2]}
    server: {device: gpu-server, workers: 2}
    modes: [local, offload, split]
    devices: [jetson-nano, rpi4]
    networks: [wifi, lte, 3g]
    requests: 50
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from fedsim.config import Bench, BenchModelSpec, ImageDataSpec, ServerSpec, TimingSpec
from fedsim.edge.bench_compare import BOTTLEFIT_REPORTED, compare, compare_adaptive
from fedsim.edge.bench_files import BENCH_FILE, COMPARISON_FILE, WORKERS_DIR
from fedsim.errors import UserError
from fedsim.files import write_json
from fedsim.loader import load_bench, load_experiment
from fedsim.runstore import new_run_dir

# ------------------------------------------------------------------------------ model


def obtain_model(spec: BenchModelSpec, seed: int, log: Callable[[str], None]) -> Path:
    """The ONNX folder to serve: given, exported from a run, or trained and exported once (cached)."""
    from fedsim.edge.server import resolve_model_dir

    if spec.onnx is not None:
        return resolve_model_dir(spec.onnx)
    if spec.run is not None:
        return resolve_model_dir(spec.run)
    if spec.timing is not None:
        return timing_model(spec.timing, seed, log)
    assert spec.train is not None
    from fedsim.cache import cache_dir
    from fedsim.edge.onnx_export import MANIFEST_FILE, export_run
    from fedsim.edge.train import TrainProgress, start_training

    exp = load_experiment(spec.train, spec.set)
    resolved = exp.model_dump(mode="json")
    resolved.pop("output", None)
    key = hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:16]
    home = cache_dir() / "edge-bench" / f"{exp.name}-{key}"
    onnx = home / "onnx"
    if (onnx / MANIFEST_FILE).is_file():
        log(f"model: cached {onnx}")
        return onnx
    log(f"model: training {spec.train} once (cached in {home})")
    from rich.console import Console

    progress = TrainProgress(Console(stderr=True), bars=False, log=True)
    with progress:
        folder, summary = start_training(spec.train, [*spec.set, f"output.dir={home / 'runs'}"], progress)
    if summary.get("status") != "completed":
        raise UserError(f"training the bench model stopped ({summary.get('status')}); see {folder.path}")
    tmp = Path(tempfile.mkdtemp(dir=home, prefix=".onnx-"))
    export_run(folder.path, tmp)
    tmp.replace(onnx)
    return onnx


def timing_model(spec: TimingSpec, seed: int, log: Callable[[str], None]) -> Path:
    """Export an untrained ResNet, its BottleFit splits and a manifest once (cached by spec and seed)."""
    import torch

    from fedsim.cache import cache_dir
    from fedsim.edge import resnet
    from fedsim.edge.bottlefit import inject_bottleneck
    from fedsim.edge.experiment import spec_data
    from fedsim.edge.onnx_export import MANIFEST_FILE, export_full, export_split

    key = hashlib.sha256(f"{spec.model_dump_json()} seed {seed}".encode()).hexdigest()[:16]
    onnx = cache_dir() / "edge-bench" / f"timing-{spec.arch}-{key}" / "onnx"
    if (onnx / MANIFEST_FILE).is_file():
        log(f"model: cached {onnx}")
        return onnx
    log(f"model: exporting an untrained {spec.arch} at {spec.image_size}x{spec.image_size} (timing only)")
    per_class = max(1, spec.test_images // 10)
    data_spec = ImageDataSpec(
        dataset="shapes",
        options={"image_size": 64, "num_train": 10, "num_test": 10 * per_class},
        image_size=spec.image_size,
    )
    data = spec_data(data_spec, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        teacher = getattr(resnet, spec.arch)(spec.num_classes).eval()
        splits = {c: inject_bottleneck(teacher, spec.split, c, spec.image_size).eval() for c in spec.channels}
    home = onnx.parent
    home.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=home, prefix=".onnx-"))
    x = data.x_test[:4]
    models = []
    for c, model in splits.items():
        files = export_split(model, x[:2], tmp / f"C{c}")
        models.append(
            {
                "C": c,
                "head": f"C{c}/head.onnx",
                "tail": f"C{c}/tail.onnx",
                "bottleneck_shape": files["bottleneck_shape"],
            }
        )
    manifest = {
        "name": f"{spec.arch}-{spec.image_size}-untrained",
        "untrained": True,
        "split": spec.split,
        "data": {**data_spec.model_dump(mode="json"), "seed": seed},
        "full": export_full(teacher, x, tmp),
        "codec": "quant8",
        "input_shape": list(data.input_shape),
        "input_name": "image",
        "bottleneck_name": "bottleneck",
        "output_name": "logits",
        "mean": list(data.mean),
        "std": list(data.std),
        "class_names": [str(i) for i in range(spec.num_classes)],
        "models": models,
    }
    write_json(tmp / MANIFEST_FILE, manifest)
    tmp.replace(onnx)
    return onnx


# ----------------------------------------------------------------------------- server


class ServerProcess:
    """``fedsim edge serve`` in its own process group, on a free loopback port."""

    def __init__(self, onnx: Path, spec: ServerSpec, log_file: Path) -> None:
        self.onnx, self.spec, self.log_file = onnx, spec, log_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    def __enter__(self) -> ServerProcess:
        port_file = self.log_file.with_suffix(".port")
        port_file.unlink(missing_ok=True)
        cmd = [
            sys.executable, "-m", "fedsim.cli", "edge", "serve", str(self.onnx),
            "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
            "--workers", str(self.spec.workers), "--threads", str(self.spec.threads),
            "--device", self.spec.device, "--max-message-bytes", str(self.spec.max_message_bytes),
        ]  # fmt: skip
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while not port_file.is_file() or not port_file.read_text().strip():
            if self.proc.poll() is not None:
                tail = self.log_file.read_text().strip().splitlines()[-1:] or ["(no output)"]
                raise UserError(f"the edge server exited with code {self.proc.returncode}: {tail[0]}")
            if time.monotonic() > deadline:
                self.__exit__()
                raise UserError(f"the edge server did not start within 120 s; see {self.log_file}")
            time.sleep(0.05)
        self.address = f"127.0.0.1:{port_file.read_text().strip()}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


# ------------------------------------------------------------------------------ grid


def configurations(bench: Bench, served: list[int]) -> list[dict[str, Any]]:
    """Worker configurations: local per device; offload, split per C and adaptive per objective
    per device x link (each network, and each trace: one pass, a request every
    ``trace_interval_s`` of trace time)."""
    from fedsim.edge.traces import resolve_trace

    channels = bench.bottlenecks if bench.bottlenecks is not None else served
    missing = sorted(set(channels) - set(served))
    if missing:
        raise UserError(f"bottlenecks {missing} are not in the model; expected some of {served}")
    links: list[dict[str, Any]] = [
        {"network": spec if isinstance(spec, str) else spec.model_dump(), "requests": bench.requests}
        for spec in bench.networks
    ]
    for name in bench.traces:
        passes = math.ceil(resolve_trace(name).duration / bench.trace_interval_s)
        links.append({"trace": name, "interval_s": bench.trace_interval_s, "requests": passes})
    base = {"network": None, "channels": None, "requests": bench.requests}
    out: list[dict[str, Any]] = []
    for device in bench.devices:
        if "local" in bench.modes:
            out.append({**base, "mode": "local", "device": device})
        for link in links:
            if "offload" in bench.modes:
                out.append({**base, **link, "mode": "offload", "device": device})
            if "split" in bench.modes:
                out.extend(
                    {**base, **link, "mode": "split", "device": device, "channels": c} for c in channels
                )
            if "adaptive" in bench.modes:
                out.extend(
                    {**base, **link, "mode": "adaptive", "device": device, "objective": o}
                    for o in bench.objectives
                )
    return out


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("fedsim", "grpcio", "onnxruntime", "protobuf")}


def run_bench(
    path: Path,
    overrides: list[str] | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Run a bench file end to end; returns the run folder and its summary (see the module docstring)."""
    from fedsim.edge.worker import Worker, WorkerConfig

    bench = load_bench(path, overrides)
    onnx = obtain_model(bench.model, bench.seed, log)
    manifest = json.loads((onnx / "manifest.json").read_text())
    grid = configurations(bench, [int(m["C"]) for m in manifest["models"]])
    from fedsim.edge.calibrate import calibrate

    # the host's speed now (its load changes it), so emulated device times use a fresh scale
    calibration = calibrate(threads=bench.threads, refresh=True)
    log(f"calibration: {calibration.reference}: {calibration.host_ref_ms:.1f} ms on this host")
    run = new_run_dir(bench)
    (run / WORKERS_DIR).mkdir(parents=True)
    (run / BENCH_FILE).write_text(bench.to_yaml())
    summary: dict[str, Any] = {
        "kind": "edge-bench",
        "name": bench.name,
        "status": "running",
        "model": {
            "onnx": str(onnx),
            "name": manifest["name"],
            "codec": manifest["codec"],
            "untrained": bool(manifest.get("untrained", False)),
        },
        "server": bench.server.model_dump(mode="json"),
        "configurations": len(grid),
        "calibration": calibration.to_dict(),
        "workers": [],
        "versions": _versions(),
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    write_json(run / "summary.json", summary)
    status = "interrupted"
    try:
        with ServerProcess(onnx, bench.server, run / "server.log") as server:
            log(
                f"server: {server.address} ({bench.server.device}, {bench.server.workers} workers); run {run}"
            )
            for i, cfg in enumerate(grid, 1):
                config = WorkerConfig(
                    mode=cfg["mode"],
                    server=server.address,
                    device=cfg["device"],
                    network=cfg["network"],
                    trace=cfg.get("trace"),
                    interval_s=cfg.get("interval_s"),
                    channels=cfg["channels"],
                    requests=cfg["requests"],
                    objective=cfg.get("objective", "latency"),
                    probe_s=bench.probe_s,
                    probe_bytes=bench.probe_bytes,
                    warmup=bench.warmup,
                    meter=bench.meter,
                    meter_period_s=bench.meter_period_s,
                    stream=bench.stream,
                    jpeg_quality=bench.jpeg_quality,
                    seed=bench.seed,
                    threads=bench.threads,
                )
                label = config.label(cfg["channels"])

                def step(done: int, total: int, label: str = label) -> None:
                    if progress is not None:
                        progress(label, done, total)

                worker = Worker(config, step)
                try:
                    result = worker.run(run / WORKERS_DIR / label)
                finally:
                    worker.close()
                summary["workers"].append(result)
                lat = result["latency_ms"]["total"]
                log(
                    f"[{i}/{len(grid)}] {label}: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, "
                    f"{1e3 * result['energy_J']['total']:.1f} mJ, accuracy {result['accuracy']:.3f}, "
                    f"{result['failed']} failed"
                )
                write_json(run / "summary.json", summary)
        status = "completed"
    finally:
        summary["status"] = status
        summary["comparison"] = compare(summary["workers"])
        summary["adaptive"] = compare_adaptive(summary["workers"])
        summary["bottlefit_reported_pct"] = BOTTLEFIT_REPORTED
        write_json(run / COMPARISON_FILE, summary["comparison"])
        write_json(run / "summary.json", summary)
    return run, summary
