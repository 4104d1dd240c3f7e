"""Tensor codecs for the uplink (per sample, per tensor), and image byte counts for offloading.

``quant8`` is BottleFit's 8-bit quantisation (Matsubara et al., WoWMoM 2022, after Jacob et
al., CVPR 2018), computed over the range [lo, hi] = [min(x_min, 0), max(x_max, 0)]:

    scale      = (hi - lo) / 255                      (sent as float32)
    zero_point = clamp(round(-lo / scale), 0, 255)     (sent as one byte)
    q          = round(clamp(zero_point + x / scale, 0, 255))  as uint8
    x_hat      = scale * (q - zero_point)

For a tensor whose values span zero (the usual case: the bottleneck is a conv output) this is
exactly the paper's formula with lo = x_min, hi = x_max. Widening the range to include zero
only matters when all values have one sign: the paper's formula then clamps the zero point
and saturates every q (for x in [10, 11] every value decodes to 1.0), whereas here the error
stays below scale / 2 everywhere. A constant tensor c (x_max == x_min) is sent exactly:
c = 0 as scale 1, zero point 0, q = 0; c > 0 as scale c, zero point 0, q = 1; c < 0 as
scale |c|, zero point 1, q = 0.

Rounding is half to even (``torch.round``). Multi-byte values are little-endian. The payload
counted by :attr:`Encoded.payload_nbytes` excludes any container (protobuf) overhead.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from fedsim.registry import Registry


@dataclass(frozen=True)
class Encoded:
    """One encoded sample.

    Attributes
    ----------
    data : bytes
        The element bytes (uint8 for quant8, little-endian float16 / float32 otherwise).
    shape : tuple of int
        The tensor's shape.
    dtype : str
        The element type of ``data``: ``"uint8"``, ``"float16"`` or ``"float32"``.
    codec : str
        The codec's registered name.
    scale, zero_point : float, int
        Quantisation parameters (1.0 and 0 for codecs that do not quantise); ``scale`` is a
        float32 value.
    """

    data: bytes
    shape: tuple[int, ...]
    dtype: str
    codec: str
    scale: float = 1.0
    zero_point: int = 0

    @property
    def payload_nbytes(self) -> int:
        """Bytes on the wire: the data, plus 4 (float32 scale) + 1 (zero point) for quant8."""
        return len(self.data) + (5 if self.codec == "quant8" else 0)


class Codec(Protocol):
    """Encodes one sample's tensor to bytes and back (to float32)."""

    name: str

    def encode(self, x: torch.Tensor) -> Encoded: ...

    def decode(self, e: Encoded) -> torch.Tensor: ...


CODECS: Registry[Codec] = Registry("codec")


def _as_float32(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().to("cpu", torch.float32).contiguous()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("cannot encode a tensor with NaN or infinite values")
    return x


def _from_bytes(e: Encoded, dtype: str, np_dtype: str) -> torch.Tensor:
    if e.dtype != dtype:
        raise ValueError(f"codec {e.codec!r} expects dtype {dtype}, got {e.dtype}")
    arr = np.frombuffer(e.data, dtype=np_dtype)
    if arr.size != math.prod(e.shape):
        raise ValueError(f"{arr.size} elements do not fit shape {e.shape}")
    return torch.from_numpy(arr.astype(np.float32).reshape(e.shape))


def quant8_params(x_min: float, x_max: float) -> tuple[float, int]:
    """Scale (float32-representable) and zero point for values in [x_min, x_max].

    Parameters
    ----------
    x_min, x_max : float
        The tensor's minimum and maximum.

    Returns
    -------
    (float, int)
        See the module docstring (range widened to include zero; constants exact).
    """
    if x_min == x_max:
        if x_min == 0.0:
            return 1.0, 0
        return float(np.float32(abs(x_min))), (0 if x_min > 0 else 1)
    lo, hi = min(x_min, 0.0), max(x_max, 0.0)
    scale = float(np.float32((hi - lo) / 255.0))
    zero_point = int(min(max(round(-lo / scale), 0), 255))
    return scale, zero_point


class Quant8:
    """8-bit per-tensor affine quantisation (BottleFit): C*H*W bytes + 4-byte scale + 1-byte zero point."""

    name = "quant8"

    def encode(self, x: torch.Tensor) -> Encoded:
        """Quantise one sample; see the module docstring."""
        x = _as_float32(x)
        if x.numel() == 0:
            return Encoded(b"", tuple(x.shape), "uint8", self.name, 1.0, 0)
        scale, zero_point = quant8_params(float(x.min()), float(x.max()))
        q = torch.round(torch.clamp(zero_point + x / scale, 0, 255)).to(torch.uint8)
        return Encoded(q.numpy().tobytes(), tuple(x.shape), "uint8", self.name, scale, zero_point)

    def decode(self, e: Encoded) -> torch.Tensor:
        """``scale * (q - zero_point)`` as float32."""
        q = _from_bytes(e, "uint8", "u1")
        return torch.tensor(e.scale, dtype=torch.float32) * (q - float(e.zero_point))


class Fp16:
    """IEEE half precision: 2 bytes per element."""

    name = "fp16"

    def encode(self, x: torch.Tensor) -> Encoded:
        """Cast one sample to float16 (little-endian); values beyond float16's range are an error."""
        x = _as_float32(x)
        if x.numel() and float(x.abs().max()) > 65504.0:
            raise ValueError("value out of float16 range (|x| > 65504); use codec 'none'")
        return Encoded(x.numpy().astype("<f2").tobytes(), tuple(x.shape), "float16", self.name)

    def decode(self, e: Encoded) -> torch.Tensor:
        """Back to float32."""
        return _from_bytes(e, "float16", "<f2")


class NoCodec:
    """Raw float32: 4 bytes per element, lossless."""

    name = "none"

    def encode(self, x: torch.Tensor) -> Encoded:
        """Float32 bytes of one sample (little-endian)."""
        x = _as_float32(x)
        return Encoded(x.numpy().astype("<f4").tobytes(), tuple(x.shape), "float32", self.name)

    def decode(self, e: Encoded) -> torch.Tensor:
        """The float32 tensor."""
        return _from_bytes(e, "float32", "<f4")


for _codec in (Quant8(), Fp16(), NoCodec()):
    CODECS.register(_codec.name)(_codec)


def encode_batch(codec: str | Codec, batch: torch.Tensor) -> list[Encoded]:
    """Encode each sample of ``batch`` (first dimension) on its own.

    Parameters
    ----------
    codec : str or Codec
        A registered codec name or a codec object.
    batch : torch.Tensor
        [B, ...].

    Returns
    -------
    list of Encoded
        One per sample.
    """
    c = CODECS.get(codec) if isinstance(codec, str) else codec
    return [c.encode(sample) for sample in batch]


def decode_batch(encoded: list[Encoded]) -> torch.Tensor:
    """Decode samples (each by the codec it names) and stack them into [B, ...] float32."""
    if not encoded:
        raise ValueError("nothing to decode")
    return torch.stack([CODECS.get(e.codec).decode(e) for e in encoded])


def jpeg_nbytes(image_uint8_hwc: np.ndarray, quality: int = 95) -> int:
    """Size in bytes of ``image`` as a baseline JPEG file (Pillow), as edge offloading sends it.

    Parameters
    ----------
    image_uint8_hwc : np.ndarray
        uint8 image, [H, W], [H, W, 1] or [H, W, 3].
    quality : int
        JPEG quality, 1..95 (Pillow's useful range).

    Returns
    -------
    int
        Encoded bytes, headers included.
    """
    from PIL import Image

    img = np.asarray(image_uint8_hwc)
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"expected an [H, W], [H, W, 1] or [H, W, 3] image, got shape {img.shape}")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getbuffer().nbytes


def raw_nbytes(image: np.ndarray | torch.Tensor) -> int:
    """Bytes of the image's elements as stored (H*W*C for a uint8 image)."""
    if isinstance(image, torch.Tensor):
        return image.numel() * image.element_size()
    return int(np.asarray(image).nbytes)
