"""What the split planner needs to know of a model: FLOPs per stage, tensor and JPEG sizes.

:mod:`fedsim.edge.plan` predicts from :class:`~fedsim.edge.plan.Candidate` s; this module
builds them for an unmodified ResNet (``fedsim edge plan resnet18``, and the split report of
federated runs, ``system.split_plan``), deterministically. What must be measured on this
host (a request's other stages, a BottleFit run's evaluation) is in
:mod:`fedsim.edge.plan_measure`.
"""

from __future__ import annotations

import math

from fedsim.edge.plan import Candidate, resnet_candidates
from fedsim.errors import UserError
from fedsim.memo import Memo, memo

RESNETS = ("resnet18", "resnet50", "resnet152")
#: shapes images whose mean JPEG size stands for an input's
JPEG_SAMPLES = 8

_STAGES: Memo[tuple[list[tuple[str, float]], list[int]]] = memo("plan.resnet_stages", 8)


def jpeg_bytes(size: int, qualities: list[int]) -> dict[int, float]:
    """Quality -> mean JPEG bytes of 8 shapes images at ``size`` (deterministic)."""
    import numpy as np

    from fedsim.data.datasets import load_dataset
    from fedsim.edge.codec import jpeg_nbytes
    from fedsim.edge.experiment import raw_uint8

    ds = load_dataset("shapes", {"image_size": size, "num_train": 10, "num_test": 10}, 0)
    images = raw_uint8(ds.x_test[:JPEG_SAMPLES], ds.mean, ds.std)
    return {q: float(np.mean([jpeg_nbytes(im, quality=q) for im in images])) for q in qualities}


def resnet_stages(name: str, size: int) -> tuple[list[tuple[str, float]], list[int]]:
    """Stage FLOPs and the elements after each stage of an unmodified ResNet at ``size`` (memoised)."""
    if name not in RESNETS:
        raise UserError(f"unknown model {name!r}; expected one of {', '.join(RESNETS)}")

    def build() -> tuple[list[tuple[str, float]], list[int]]:
        import torch

        from fedsim.edge import resnet
        from fedsim.edge.flops import count_flops

        net = getattr(resnet, name)(1000).eval()
        x = torch.zeros(1, 3, size, size)
        flops, numel = [], []
        with torch.no_grad():
            for stage_name, stage in net.stages():
                flops.append((stage_name, float(count_flops(stage, tuple(x.shape[1:])))))
                x = stage(x)
                numel.append(math.prod(x.shape[1:]))
        return flops, numel

    return _STAGES.get((name, size), build)


def resnet_plan_candidates(name: str, size: int, qualities: list[int]) -> list[Candidate]:
    """Local, offloading and every split of an unmodified ResNet (:func:`resnet_candidates`),
    model compute and transfers only (:func:`with_overheads` adds the other stages)."""
    flops, numel = resnet_stages(name, size)
    return resnet_candidates(flops, numel, {q: (b, 0.0) for q, b in jpeg_bytes(size, qualities).items()})
