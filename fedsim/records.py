"""Moving model weights in and out of Flower records, and counting their bytes."""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from torch import nn


@lru_cache(maxsize=1024)
def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(shape, dtype=dtype), allow_pickle=False)
    raw = buf.getvalue()
    return raw[: len(raw) - int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize]


def to_array(x: np.ndarray) -> Array:
    """A Flower ``Array`` in NumPy's .npy format, as ``Array(x)`` makes, without its
    per-call header formatting (the header of each (dtype, shape) is cached)."""
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)  # (never for 0-d arrays, which it would make 1-d)
    dtype, shape = str(x.dtype), tuple(int(d) for d in x.shape)
    data = _npy_header(dtype, shape) + x.tobytes()
    return Array(dtype=dtype, shape=shape, stype="numpy.ndarray", data=data)


def array_view(a: Array) -> np.ndarray:
    """A read-only, zero-copy view of a C-ordered .npy ``Array`` (else ``a.numpy()``)."""
    dtype = np.dtype(a.dtype)
    nbytes = int(np.prod(a.shape, dtype=np.int64)) * dtype.itemsize
    offset = len(a.data) - nbytes
    if a.stype != "numpy.ndarray" or offset < 10 or b"'fortran_order': False" not in a.data[:offset]:
        return a.numpy()
    return np.frombuffer(a.data, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset).reshape(a.shape)


def state_to_arrays(state: dict[str, torch.Tensor]) -> ArrayRecord:
    """An ArrayRecord holding a copy of ``state`` (parameters and buffers)."""
    return ArrayRecord({k: to_array(v.detach().cpu().numpy()) for k, v in state.items()})


def model_to_arrays(model: nn.Module) -> ArrayRecord:
    """The model's full state (parameters and BatchNorm statistics) as an ArrayRecord."""
    return state_to_arrays(model.state_dict())


def arrays_to_numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    """Name -> read-only numpy view for every entry of an ArrayRecord."""
    return {k: array_view(v) for k, v in arrays.items()}


def numpy_to_arrays(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord from name -> numpy array."""
    return ArrayRecord({k: to_array(v) for k, v in arrays.items()})


def load_arrays(model: nn.Module, arrays: ArrayRecord) -> None:
    """Copy ``arrays`` into ``model``'s existing tensors (names and shapes must match)."""
    state = model.state_dict()
    if state.keys() != arrays.keys():
        missing, extra = state.keys() - arrays.keys(), arrays.keys() - state.keys()
        raise ValueError(f"arrays do not match the model: missing {sorted(missing)}, extra {sorted(extra)}")
    for key, value in arrays_to_numpy(arrays).items():
        np.copyto(state[key].numpy(), value, casting="unsafe")


def weighted_average(records: list[ArrayRecord], weights: list[float]) -> ArrayRecord:
    """sum_k w_k x_k / sum_k w_k for every array, accumulated in float64 and cast back
    to each array's dtype (integer buffers rounded). Zero-copy reads of the inputs."""
    total = float(sum(weights))
    out: dict[str, np.ndarray] = {}
    for key in records[0]:
        acc = np.zeros(records[0][key].shape, dtype=np.float64)
        for rec, w in zip(records, weights, strict=True):
            acc += array_view(rec[key]) * (w / total)
        dtype = np.dtype(records[0][key].dtype)
        out[key] = np.rint(acc).astype(dtype) if dtype.kind in "iu" else acc.astype(dtype)
    return numpy_to_arrays(out)


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
