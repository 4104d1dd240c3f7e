"""What the planner measures on this host: a request's stages besides the model, and a
BottleFit run's candidates (from its evaluation)."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from fedsim.edge.plan import Candidate, bottlefit_candidates
from fedsim.errors import UserError


def run_candidates(folder: Path, qualities: list[int]) -> tuple[list[Candidate], dict[str, int]]:
    """Local and offloading with a BottleFit run's teacher, one candidate per evaluated C, and
    each C's payload elements."""
    from fedsim.edge.evaluate import EVALUATE_FILE, evaluate_run

    file = folder / EVALUATE_FILE
    result = json.loads(file.read_text()) if file.is_file() else evaluate_run(folder)
    if not result["rows"]:
        raise UserError(f"{folder}: no trained C to plan with; expected a run 'fedsim edge train' finished")
    teacher, jpeg = result["teacher"], result["input"]["jpeg_bytes"]
    local = Candidate("local", float(teacher["flops"]), 0.0, 0.0, 0.0, float(teacher["accuracy"]))
    offload = [
        Candidate(f"offload-q{q}", 0.0, local.device_flops, jpeg, 4096.0, local.accuracy) for q in qualities
    ]
    numel = {f"bottlefit-C{r['C']}": math.prod(r["bottleneck_shape"]) for r in result["rows"]}
    return [local, *offload, *bottlefit_candidates(result["rows"])], numel


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


def with_overheads(
    cands: list[Candidate], o: Overheads, device_scale: float, numel: dict[str, int]
) -> list[Candidate]:
    """The candidates with their measured non-model stages added: device ones scaled to the
    device (``device_scale``: device ms per host ms), server ones at this host's speed (as the
    testbed's server decodes). ``numel``: candidate name -> elements of its split payload."""
    out = []
    for c in cands:
        if c.name.startswith("offload-q"):
            q = int(c.name.removeprefix("offload-q"))
            dev, srv = o.jpeg_encode[q], o.jpeg_decode
        elif c.name in numel:
            n = numel[c.name]
            dev, srv = o.preprocess + o.quant8_encode[n], o.quant8_decode[n]
        else:  # local, or a raw (fp32) split: preprocessing only
            dev, srv = o.preprocess, 0.0
        out.append(replace(c, device_extra_ms=dev * device_scale, server_extra_ms=srv if c.remote else 0.0))
    return out
