"""What travels between device and server: images, tensors and their protocol messages.

Both ends use these functions, so that what the device encodes is exactly what the server
decodes. Checks on incoming tensors raise :class:`BadInput` with the gRPC status code and
a message naming what was wrong and what was expected; the server turns it into the
call's status.
"""

from __future__ import annotations

import io
import math
from typing import Any

import grpc
import numpy as np
import torch

from fedsim.edge.codec import CODECS, Encoded
from fedsim.edge.proto import pb

#: Slack above ``max_message_bytes`` given to gRPC itself, so that an oversized request
#: still reaches the handler, which rejects it with a message and a log line.
_GRPC_SLACK = 1 << 20

#: The element type each codec sends.
CODEC_DTYPES = {"quant8": "uint8", "fp16": "float16", "none": "float32"}
_NP_DTYPES: dict[str, np.dtype[Any]] = {
    "uint8": np.dtype("u1"),
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
}


class BadInput(Exception):
    """A request the server cannot serve: a gRPC status code and one line saying why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ----------------------------------------------------------------------------- images


def preprocess(raw: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 image ``[H, W, C]`` -> normalised float32 batch ``[1, C, H, W]`` (the model's input)."""
    x: np.ndarray = raw.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def jpeg_encode(raw: np.ndarray, quality: int) -> bytes:
    """A baseline JPEG file of a uint8 image ``[H, W, C]`` (C = 1 or 3), as offloading sends it."""
    from PIL import Image

    img = raw[:, :, 0] if raw.shape[2] == 1 else raw
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def jpeg_decode(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """Decode an image file to uint8 ``[H, W, C]`` for a model whose input is ``shape`` = [C, H, W].

    Raises
    ------
    BadInput
        INVALID_ARGUMENT when the bytes are not an image, or its size is not the model's.
    """
    from PIL import Image, UnidentifiedImageError

    channels, height, width = shape
    try:
        img: Image.Image = Image.open(io.BytesIO(data))
        img = img.convert("RGB" if channels == 3 else "L")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadInput(grpc.StatusCode.INVALID_ARGUMENT, f"image is not a decodable JPEG ({exc})") from None
    if img.size != (width, height):
        raise BadInput(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"image is {img.size[0]}x{img.size[1]} pixels; expected {width}x{height}",
        )
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


# ---------------------------------------------------------------------------- tensors


def tensor_message(e: Encoded, batch: bool = True) -> pb.Tensor:
    """The protocol message of one encoded sample (shape gets a leading batch axis of 1)."""
    shape = (1, *e.shape) if batch else e.shape
    return pb.Tensor(
        data=e.data, shape=shape, dtype=e.dtype, codec=e.codec, scale=e.scale, zero_point=e.zero_point
    )


def decode_tensor(t: pb.Tensor, expected: dict[int, tuple[int, ...]], max_batch: int) -> np.ndarray:
    """Check a tensor message against the served models and decode it to float32 ``[B, C, h, w]``.

    Parameters
    ----------
    t : pb.Tensor
        The message.
    expected : dict
        Channels C -> bottleneck shape ``(C, h, w)`` of each served split.
    max_batch : int
        Largest batch accepted.

    Raises
    ------
    BadInput
        INVALID_ARGUMENT for an unknown codec or dtype, a dtype that is not the codec's,
        a shape no served model takes, a byte length that does not match the shape, or a
        non-finite scale.
    """
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    if t.codec not in CODECS:
        raise BadInput(invalid, f"unknown codec {t.codec!r}; expected one of {', '.join(CODECS.names())}")
    if t.dtype not in _NP_DTYPES:
        raise BadInput(invalid, f"unknown dtype {t.dtype!r}; expected one of {', '.join(_NP_DTYPES)}")
    if t.dtype != CODEC_DTYPES[t.codec]:
        raise BadInput(
            invalid, f"dtype {t.dtype} does not match codec {t.codec!r} (expected {CODEC_DTYPES[t.codec]})"
        )
    shape = tuple(int(d) for d in t.shape)
    if len(shape) == 3:
        shape = (1, *shape)
    wanted = " or ".join(f"[B, {c}, {s[1]}, {s[2]}]" for c, s in sorted(expected.items()))
    if len(shape) != 4 or shape[1:] not in set(expected.values()) or not 1 <= shape[0] <= max_batch:
        raise BadInput(
            invalid,
            f"shape {list(t.shape)} does not fit the served model; "
            f"expected {wanted} with 1 <= B <= {max_batch}",
        )
    itemsize = _NP_DTYPES[t.dtype].itemsize
    if len(t.data) != math.prod(shape) * itemsize:
        raise BadInput(
            invalid,
            f"{len(t.data)} bytes do not match shape {list(shape)} of {t.dtype} "
            f"(expected {math.prod(shape) * itemsize} bytes)",
        )
    if not math.isfinite(t.scale) or (t.codec == "quant8" and t.scale <= 0):
        raise BadInput(invalid, f"scale {t.scale} is not a positive finite number")
    if t.codec == "quant8" and not 0 <= t.zero_point <= 255:
        raise BadInput(invalid, f"zero point {t.zero_point} is outside 0..255")
    e = Encoded(t.data, shape, t.dtype, t.codec, t.scale or 1.0, t.zero_point)
    x: torch.Tensor = CODECS.get(t.codec).decode(e)
    return x.numpy()


def grpc_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel/server options: message limits from configuration, both directions."""
    return [
        ("grpc.max_send_message_length", max_message_bytes + _GRPC_SLACK),
        ("grpc.max_receive_message_length", max_message_bytes + _GRPC_SLACK),
    ]
