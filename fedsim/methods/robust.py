"""Robust aggregation of client updates, a parameter of FedAvg and FedProx (``aggregator:``).

- ``mean``: the sample-weighted mean (FedAvg, McMahan et al., AISTATS 2017).
- ``median``: the coordinate-wise median of the clients' weights (Yin et al., "Byzantine-Robust
  Distributed Learning: Towards Optimal Statistical Rates", ICML 2018).
- ``trimmed_mean``: per coordinate, the largest and the smallest ``trim_fraction`` of the
  values dropped and the rest averaged (Yin et al., ICML 2018).
- ``clip``: each client's update (its weights minus the global ones) scaled down to an L2 norm
  of at most ``clip_norm`` over all its float arrays, then the sample-weighted mean of the
  clipped updates added to the global weights (norm bounding, Sun et al., "Can You Really
  Backdoor Federated Learning?", 2019).

The median and the trimmed mean count every client once (the papers' estimators); integer
arrays (BatchNorm's batch counts) are aggregated the same way and rounded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from flwr.app import ArrayRecord
from pydantic import Field, model_validator

from fedsim.config import Params
from fedsim.records import array_view, numpy_to_arrays, weighted_average
from fedsim.registry import Registry


class AggregationParams(Params):
    """How the server combines the clients' weights."""

    aggregator: Literal["mean", "median", "trimmed_mean", "clip"] = Field(
        "mean", description="mean (FedAvg), median, trimmed_mean or clip (robust aggregators)"
    )
    trim_fraction: float = Field(
        0.1, ge=0, lt=0.5, description="trimmed_mean: share of values dropped at each end"
    )
    clip_norm: float | None = Field(None, gt=0, description="clip: largest L2 norm of a client's update")

    @model_validator(mode="after")
    def _clip_needs_norm(self) -> AggregationParams:
        if self.aggregator == "clip" and self.clip_norm is None:
            raise ValueError("aggregator clip needs clip_norm (the largest L2 norm of an update)")
        return self


#: (replies' arrays, their sample weights, the global arrays, the parameters) -> new arrays
Aggregator = Callable[[list[ArrayRecord], list[float], ArrayRecord, AggregationParams], ArrayRecord]
AGGREGATORS: Registry[Aggregator] = Registry("aggregator")


def _per_coordinate(records: list[ArrayRecord], reduce: Callable[[np.ndarray], np.ndarray]) -> ArrayRecord:
    """``reduce`` over the clients' axis of every array, cast back to its dtype."""
    out = {}
    for key in records[0]:
        stacked = np.stack([array_view(r[key]).astype(np.float64) for r in records])
        value = reduce(stacked)
        dtype = np.dtype(records[0][key].dtype)
        out[key] = np.rint(value).astype(dtype) if dtype.kind in "iu" else value.astype(dtype)
    return numpy_to_arrays(out)


@AGGREGATORS.register("mean", summary="sample-weighted mean (FedAvg)")
def mean(
    records: list[ArrayRecord], weights: list[float], _start: ArrayRecord, _p: AggregationParams
) -> ArrayRecord:
    """The sample-weighted mean."""
    return weighted_average(records, weights)


@AGGREGATORS.register("median", summary="coordinate-wise median (Yin et al. 2018)")
def median(
    records: list[ArrayRecord], _weights: list[float], _start: ArrayRecord, _p: AggregationParams
) -> ArrayRecord:
    """The coordinate-wise median over clients."""
    return _per_coordinate(records, lambda s: np.median(s, axis=0))


@AGGREGATORS.register("trimmed_mean", summary="coordinate-wise trimmed mean (Yin et al. 2018)")
def trimmed_mean(
    records: list[ArrayRecord], _weights: list[float], _start: ArrayRecord, p: AggregationParams
) -> ArrayRecord:
    """Per coordinate: the ``trim_fraction`` largest and smallest values dropped, the rest averaged."""
    k = int(p.trim_fraction * len(records))

    def reduce(s: np.ndarray) -> np.ndarray:
        s = np.sort(s, axis=0)
        return s[k : len(records) - k].mean(axis=0)

    return _per_coordinate(records, reduce)


@AGGREGATORS.register("clip", summary="norm-clipped updates, weighted mean (Sun et al. 2019)")
def clip(
    records: list[ArrayRecord], weights: list[float], start: ArrayRecord, p: AggregationParams
) -> ArrayRecord:
    """Each update clipped to an L2 norm of ``clip_norm``, then the sample-weighted mean."""
    assert p.clip_norm is not None
    base = {k: array_view(start[k]).astype(np.float64) for k in start}
    total = float(sum(weights))
    acc = {k: np.zeros_like(v) for k, v in base.items()}
    for rec, w in zip(records, weights, strict=True):
        update = {k: array_view(rec[k]).astype(np.float64) - base[k] for k in base}
        norm = float(
            np.sqrt(
                sum(float((u**2).sum()) for k, u in update.items() if np.dtype(start[k].dtype).kind == "f")
            )
        )
        factor = min(1.0, p.clip_norm / norm) if norm > 0 else 1.0
        for k, u in update.items():
            acc[k] += u * (factor * w / total)
    out = {}
    for k, v in base.items():
        dtype = np.dtype(start[k].dtype)
        value = v + acc[k]
        out[k] = np.rint(value).astype(dtype) if dtype.kind in "iu" else value.astype(dtype)
    return numpy_to_arrays(out)


def aggregate(
    records: list[ArrayRecord], weights: list[float], start: ArrayRecord, params: AggregationParams
) -> ArrayRecord:
    """The new global arrays from the accepted replies, by ``params.aggregator``."""
    return AGGREGATORS.get(params.aggregator)(records, weights, start, params)
