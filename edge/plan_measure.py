"""What the planner measures on this host: a request's stages besides the model, and a
BottleFit run's candidates (from its evaluation)."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from fedsim.edge.plan import REPLY_BYTES, Candidate, bottlefit_candidates
from fedsim.errors import UserError


def run_candidates(folder: Path, qualities: list[int]) -> list[Candidate]:
    """Local and offloading with a BottleFit run's teacher, and one candidate per evaluated C."""
    from fedsim.edge.evaluate import EVALUATE_FILE, evaluate_run

    file = folder / EVALUATE_FILE
    result = json.loads(file.read_text()) if file.is_file() else evaluate_run(folder)
    if not result["rows"]:
        raise UserError(f"{folder}: no trained C to plan with; expected a run 'fedsim edge train' finished")
    teacher, jpeg = result["teacher"], result["input"]["jpeg_bytes"]
    local = Candidate("local", float(teacher["flops"]), 0.0, 0.0, 0.0, float(teacher["accuracy"]))
    offload = [
        Candidate(f"offload-q{q}", 0.0, local.device_flops, jpeg, REPLY_BYTES, local.accuracy, jpeg_quality=q)
        for q in qualities
    ]
    return [local, *offload, *bottlefit_candidates(result["rows"])]


def _host_ms(fn: Callable[[], object], repeats: int = 7) -> float:
    """Median wall milliseconds of ``fn`` on this host (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@dataclass(frozen=True)
class Overheads:
    """Per-request costs besides the model, measured on this host (ms), as the testbed has them.

    ``preprocess``: uint8 image to the normalised input; ``jpeg_encode`` / ``jpeg_decode``:
    offloading's image on the device / on the server; ``quant8_encode`` /
    ``quant8_decode``: per tensor size (elements), the split payload on the device / server.
    """

    preprocess: float
    jpeg_encode: dict[int, float]
    jpeg_decode: float
    quant8_encode: dict[int, float]
    quant8_decode: dict[int, float]


def measure_overheads(size: int, qualities: list[int], numels: list[int]) -> Overheads:
    """Time the non-model stages of a request at input ``size`` on this host."""
    import numpy as np
    import torch

    from fedsim.edge.codec import CODECS
    from fedsim.edge.wire import jpeg_decode, jpeg_encode, preprocess

    raw = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    quant8 = CODECS.get("quant8")
    enc, dec = {}, {}
    for n in sorted(set(numels)):
        z = torch.randn(n)
        encoded = quant8.encode(z)
        enc[n], dec[n] = _host_ms(partial(quant8.encode, z)), _host_ms(partial(quant8.decode, encoded))
    jpeg = jpeg_encode(raw, max(qualities))
    return Overheads(
        preprocess=_host_ms(lambda: preprocess(raw, mean, std)),
        jpeg_encode={q: _host_ms(partial(jpeg_encode, raw, q)) for q in qualities},
        jpeg_decode=_host_ms(lambda: preprocess(jpeg_decode(jpeg, (3, size, size)), mean, std)),
        quant8_encode=enc,
        quant8_decode=dec,
    )


def measure_for(cands: list[Candidate], size: int) -> Overheads:
    """:func:`measure_overheads` for what ``cands`` encode at input ``size``."""
    qualities = [c.jpeg_quality for c in cands if c.jpeg_quality is not None]
    numels = [c.quant8_numel for c in cands if c.quant8_numel is not None]
    return measure_overheads(size, qualities, numels)


def with_overheads(cands: list[Candidate], o: Overheads, device_scale: float) -> list[Candidate]:
    """The candidates with their measured non-model stages added: device ones scaled to the
    device (``device_scale``: device ms per host ms), server ones at this host's speed (as the
    testbed's server decodes)."""
    out = []
    for c in cands:
        if c.jpeg_quality is not None:
            dev, srv = o.jpeg_encode[c.jpeg_quality], o.jpeg_decode
        elif c.quant8_numel is not None:
            n = c.quant8_numel
            dev, srv = o.preprocess + o.quant8_encode[n], o.quant8_decode[n]
        else:  # local, or a raw (fp32) split: preprocessing only
            dev, srv = o.preprocess, 0.0
        out.append(replace(c, device_extra_ms=dev * device_scale, server_extra_ms=srv if c.remote else 0.0))
    return out
