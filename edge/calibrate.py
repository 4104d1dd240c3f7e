"""Relative compute speed of the device profiles against this host.

A device profile's ``gflops`` is an effective ResNet-18 throughput: its published batch-1
ResNet-18 latency is ``RESNET18_GFLOPS / gflops`` (34.7 ms for the Jetson Nano, 100 ms for
the Raspberry Pi 4). :func:`calibrate` times the same workload here, with onnxruntime on
the CPU as the edge worker runs its models, and the emulated device then takes::

    time_scale = device_ref_ms / host_ref_ms

times the host's measured compute time. The measurement is cached per host (name, CPU
count, onnxruntime version) and thread count in ``cache_dir()/calibration/``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.cache import cache_dir
from fedsim.files import write_json
from fedsim.system.profiles import DeviceProfile

WARMUPS = 2
IMAGE_SIZE = 224
SEED = 0
MODEL_FILE = f"resnet18-{IMAGE_SIZE}.onnx"


@dataclass(frozen=True)
class Calibration:
    """One measurement of the reference workload on this host.

    Attributes
    ----------
    host_ref_ms : float
        Median latency of the reference workload, in milliseconds.
    reference : str
        What was timed.
    threads : int
        onnxruntime intra-op threads.
    repeats : int
        Timed runs (after the warm-ups).
    host : str
        Host name, CPU model where known, CPU count.
    measured_at : str
        When (ISO 8601, UTC).
    """

    host_ref_ms: float
    reference: str
    threads: int
    repeats: int
    host: str
    measured_at: str

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def device_ref_ms(profile: DeviceProfile) -> float | None:
    """The profile's ResNet-18 batch-1 latency in ms; ``None`` for this host (``gflops`` None)."""
    return profile.resnet18_ms


def time_scale(profile: DeviceProfile, cal: Calibration) -> float:
    """Factor turning a compute time measured here into the device's: device ms / host ms."""
    ref = device_ref_ms(profile)
    return 1.0 if ref is None else ref / cal.host_ref_ms


def calibrate(threads: int = 1, repeats: int = 7, refresh: bool = False) -> Calibration:
    """Time ResNet-18 (224x224, batch 1) with onnxruntime on this host; cached.

    Parameters
    ----------
    threads : int
        onnxruntime intra-op threads (a calibration is kept per thread count).
    repeats : int
        Timed runs after two warm-ups; the median is kept.
    refresh : bool
        Measure again even when a cached calibration exists.

    Returns
    -------
    Calibration
    """
    if threads < 1 or repeats < 1:
        raise ValueError(f"threads and repeats must be >= 1, got {threads} and {repeats}")
    path = cache_dir() / "calibration" / f"{host_key()}-t{threads}.json"
    if not refresh:
        cached = _load(path, repeats)
        if cached is not None:
            return cached
    cal = _measure(reference_model(), threads, repeats)
    write_json(path, cal.to_dict())
    return cal


def host_key() -> str:
    """A file-name-safe key for this host: name, CPU count and onnxruntime version."""
    import onnxruntime as ort

    raw = f"{platform.node() or 'host'}-{os.cpu_count()}cpu-ort{ort.__version__}"
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in raw)


def reference_model() -> Path:
    """ResNet-18 (random weights, seed 0) exported once to ``cache_dir()/calibration``."""
    import torch

    from fedsim.edge.onnx_export import export_module
    from fedsim.edge.resnet import resnet18

    path = cache_dir() / "calibration" / MODEL_FILE
    if path.exists():
        return path
    with torch.random.fork_rng(devices=[]):  # weights do not matter for timing; leave global RNG alone
        torch.manual_seed(SEED)
        model = resnet18()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    export_module(model, torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE), tmp, "image", "logits")
    os.replace(tmp, path)
    return path


def host_description() -> str:
    """Host name, CPU model (from /proc/cpuinfo where readable) and CPU count."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}, {cpu}, {os.cpu_count()} CPUs"


def _measure(model: Path, threads: int, repeats: int) -> Calibration:
    """Median onnxruntime latency of ``model`` on one seeded image after the warm-ups."""
    import onnxruntime as ort

    from fedsim.edge.onnx_export import ort_session

    session = ort_session(model, threads)
    name = session.get_inputs()[0].name
    image = np.random.default_rng(SEED).standard_normal((1, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    for _ in range(WARMUPS):
        session.run(None, {name: image})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {name: image})
        times.append(time.perf_counter() - start)
    return Calibration(
        host_ref_ms=statistics.median(times) * 1000.0,
        reference=(
            f"resnet18 {IMAGE_SIZE}x{IMAGE_SIZE} batch 1, onnxruntime {ort.__version__} CPU, "
            f"{threads} thread{'s' if threads > 1 else ''}, median of {repeats} after {WARMUPS} warm-ups"
        ),
        threads=threads,
        repeats=repeats,
        host=host_description(),
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _load(path: Path, repeats: int) -> Calibration | None:
    """The cached calibration at ``path`` if readable and of ``repeats`` runs, else ``None``."""
    try:
        cal = Calibration(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return cal if cal.repeats == repeats else None
