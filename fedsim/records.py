"""Moving model weights in and out of Flower records, and counting their bytes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from torch import nn


def state_to_arrays(state: dict[str, torch.Tensor]) -> ArrayRecord:
    """An ArrayRecord holding a copy of ``state`` (parameters and buffers)."""
    return ArrayRecord({k: Array(v.detach().cpu().numpy()) for k, v in state.items()})


def model_to_arrays(model: nn.Module) -> ArrayRecord:
    """The model's full state (parameters and BatchNorm statistics) as an ArrayRecord."""
    return state_to_arrays(model.state_dict())


def arrays_to_numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    """Name -> numpy array for every entry of an ArrayRecord."""
    return {k: v.numpy() for k, v in arrays.items()}


def load_arrays(model: nn.Module, arrays: ArrayRecord) -> None:
    """Copy ``arrays`` into ``model`` in place (names and shapes must match)."""
    state = {k: torch.from_numpy(np.array(v, copy=False)) for k, v in arrays_to_numpy(arrays).items()}
    model.load_state_dict(state, strict=True)


def _value_nbytes(value: Any) -> int:
    if isinstance(value, bytes | str):
        return len(value)
    if isinstance(value, list):
        return sum(_value_nbytes(v) for v in value)
    return 8


def record_nbytes(content: RecordDict) -> int:
    """Payload bytes of a message's content.

    Arrays count their serialised bytes; config and metric entries count their key
    plus 8 bytes per number (or the length of a string or bytes value). Protocol
    framing (protobuf, gRPC, HTTP/2) is not included.
    """
    total = 0
    for rec in content.values():
        if isinstance(rec, ArrayRecord):
            total += sum(len(a.data) + len(k) for k, a in rec.items())
        elif isinstance(rec, ConfigRecord | MetricRecord):
            total += sum(len(k) + _value_nbytes(v) for k, v in rec.items())
    return total
