"""Neurosurgeon's per-layer profile of an unmodified ResNet: candidate split points.

Y. Kang, J. Hauswald, C. Gao, A. Rovinski, T. Mudge, J. Mars, L. Tang, "Neurosurgeon:
Collaborative Intelligence Between the Cloud and Mobile Edge", ASPLOS 2017. For each stage
boundary i the profile gives the tensor that would cross the network if the model were split
after stage i, and the stage's compute latency on this host; the split rule then adds
``bytes(i) / uplink + RTT`` and the server's time for the remaining stages.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch

from fedsim.edge.resnet import ResNet


def profile_split_points(
    model: ResNet,
    input_shape: tuple[int, ...] = (3, 224, 224),
    repeats: int = 5,
    warmup: int = 2,
    num_threads: int | None = None,
) -> list[dict[str, Any]]:
    """Time each stage of ``model`` at batch 1 and size the tensor after it.

    Parameters
    ----------
    model : ResNet
        The model to profile (its train/eval mode is restored afterwards; it runs in eval
        mode under ``torch.inference_mode``).
    input_shape : tuple of int
        One sample's shape (C, H, W).
    repeats : int
        Timed runs per stage; the median is reported.
    warmup : int
        Untimed runs per stage before timing.
    num_threads : int or None
        Intra-op threads while profiling (restored afterwards); None keeps torch's setting.
        One thread gives steadier numbers on a busy host and mimics a small device.

    Returns
    -------
    list of dict
        One row per boundary, in order (after ``stem``, ``layer1`` .. ``layer4``, ``pool_fc``),
        with ``boundary``, ``output_shape`` (one sample's, a list), ``output_bytes_fp32`` (4 per
        element), ``output_bytes_quant8`` (1 per element + 5), ``stage_latency_ms`` (median),
        ``cumulative_latency_ms`` (sum of the medians so far) and ``input_bytes_uint8`` (the raw
        uint8 input's size, the same in every row).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    training = model.training
    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    model.eval()
    rows: list[dict[str, Any]] = []
    cumulative = 0.0
    try:
        with torch.inference_mode():
            x = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))
            for name, stage in model.stages():
                for _ in range(warmup):
                    stage(x)
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    y = stage(x)
                    times.append((time.perf_counter() - t0) * 1e3)
                stage_ms = statistics.median(times)
                cumulative += stage_ms
                shape = list(y.shape[1:])
                numel = math.prod(shape)
                rows.append(
                    {
                        "boundary": name,
                        "output_shape": shape,
                        "output_bytes_fp32": 4 * numel,
                        "output_bytes_quant8": numel + 5,
                        "stage_latency_ms": stage_ms,
                        "cumulative_latency_ms": cumulative,
                        "input_bytes_uint8": math.prod(input_shape),
                    }
                )
                x = y
    finally:
        model.train(training)
        torch.set_num_threads(threads)
    return rows
