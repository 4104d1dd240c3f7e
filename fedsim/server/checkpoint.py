"""Checkpoints: everything needed to continue a run after its last completed round.

A checkpoint holds the global arrays, the strategy's own state and, where the
runtime can reach them, every client's ``context.state``. Sampling and client
seeds are derived from (seed, round, partition), so no RNG state needs saving:
a resumed run draws exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedsim.records import arrays_to_numpy, numpy_to_arrays


@dataclass
class Checkpoint:
    """The state of a run after ``round``."""

    round: int
    arrays: ArrayRecord
    strategy: dict[str, Any]
    client_states: dict[int, RecordDict] | None
    elapsed_s: float


def _recorddict_to_plain(rd: RecordDict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, rec in rd.items():
        if isinstance(rec, ArrayRecord):
            out[key] = ("arrays", arrays_to_numpy(rec))
        elif isinstance(rec, MetricRecord):
            out[key] = ("metrics", dict(rec))
        elif isinstance(rec, ConfigRecord):
            out[key] = ("config", dict(rec))
    return out


def _plain_to_recorddict(plain: dict[str, Any]) -> RecordDict:
    rd = RecordDict()
    for key, (kind, value) in plain.items():
        if kind == "arrays":
            rd[key] = numpy_to_arrays(value)
        elif kind == "metrics":
            rd[key] = MetricRecord(value)
        else:
            rd[key] = ConfigRecord(value)
    return rd


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    """Write a checkpoint atomically (a torn file never replaces a good one)."""
    payload = {
        "round": ckpt.round,
        "arrays": arrays_to_numpy(ckpt.arrays),
        "strategy": ckpt.strategy,
        "client_states": None
        if ckpt.client_states is None
        else {pid: _recorddict_to_plain(rd) for pid, rd in ckpt.client_states.items()},
        "elapsed_s": ckpt.elapsed_s,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    payload = torch.load(path, weights_only=False)
    states = payload["client_states"]
    return Checkpoint(
        round=int(payload["round"]),
        arrays=numpy_to_arrays(payload["arrays"]),
        strategy=payload["strategy"],
        client_states=None
        if states is None
        else {int(p): _plain_to_recorddict(s) for p, s in states.items()},
        elapsed_s=float(payload["elapsed_s"]),
    )
