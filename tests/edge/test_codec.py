"""Uplink codecs: hand-computed quant8, error bounds, payload sizes, JPEG sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedsim.edge.codec import (
    CODECS,
    Encoded,
    decode_batch,
    encode_batch,
    jpeg_nbytes,
    quant8_params,
    raw_nbytes,
)

quant8 = CODECS.get("quant8")


def test_registry_names():
    assert CODECS.names() == ["fp16", "none", "quant8"]


def test_quant8_hand_computed():
    x = torch.tensor([-1.0, 0.0, 1.0, 3.0])
    e = quant8.encode(x)
    # scale = (3 - (-1)) / 255 = 4/255; zero point = round(1 / (4/255)) = round(63.75) = 64
    assert e.scale == pytest.approx(4 / 255, rel=1e-7)
    assert e.scale == float(np.float32(4 / 255))
    assert e.zero_point == 64
    # q = round(clamp(64 + x * 63.75)) = [round(0.25), 64, round(127.75), clamp(255.25)]
    assert list(e.data) == [0, 64, 128, 255]
    assert (e.shape, e.dtype, e.codec) == ((4,), "uint8", "quant8")
    assert e.payload_nbytes == 4 + 5
    x_hat = quant8.decode(e)
    assert x_hat.dtype == torch.float32
    want = torch.tensor([-64.0, 0.0, 64.0, 191.0]) * torch.tensor(e.scale, dtype=torch.float32)
    assert torch.equal(x_hat, want)
    assert x_hat[1].item() == 0.0  # zero is exact


def test_quant8_follows_the_paper_formula_when_the_range_spans_zero():
    torch.manual_seed(0)
    x = torch.randn(4, 7, 9)
    e = quant8.encode(x)
    lo, hi = x.min().item(), x.max().item()
    scale = np.float32((hi - lo) / 255)
    zero_point = int(np.clip(round(-lo / float(scale)), 0, 255))
    q = torch.round(torch.clamp(zero_point + x / float(scale), 0, 255)).to(torch.uint8)
    assert (e.scale, e.zero_point) == (float(scale), zero_point)
    assert e.data == q.numpy().tobytes()


@pytest.mark.parametrize(
    ("value", "scale", "zero_point", "q"), [(0.0, 1.0, 0, 0), (2.5, 2.5, 0, 1), (-3.0, 3.0, 1, 0)]
)
def test_quant8_constant_tensor_is_exact(value, scale, zero_point, q):
    x = torch.full((2, 3, 3), value)
    e = quant8.encode(x)
    assert (e.scale, e.zero_point) == (scale, zero_point)
    assert set(e.data) == {q}
    assert torch.equal(quant8.decode(e), x)


def test_quant8_one_signed_range_is_widened_to_zero():
    # the paper's formula would clamp the zero point to 0 and saturate every q at 255 (x_hat = 1.0)
    x = torch.tensor([10.0, 10.5, 11.0])
    assert quant8_params(10.0, 11.0) == (float(np.float32(11 / 255)), 0)
    e = quant8.encode(x)
    assert (quant8.decode(e) - x).abs().max().item() <= e.scale / 2
    assert quant8_params(-11.0, -10.0) == (float(np.float32(11 / 255)), 255)


_floats = st.floats(-1e4, 1e4, width=32, allow_nan=False, allow_subnormal=False)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6)), elements=_floats)
)
def test_quant8_error_at_most_half_a_step(a):
    x = torch.from_numpy(a)
    e = quant8.encode(x)
    assert e.payload_nbytes == a.size + 5
    err = (quant8.decode(e) - x).abs().max().item()
    assert err <= e.scale / 2 * (1 + 1e-4) + 1e-6 * float(np.abs(a).max())


@settings(max_examples=20, deadline=None)
@given(
    arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)), elements=_floats)
)
def test_fp16_and_none_round_trips(a):
    x = torch.from_numpy(a)
    none = CODECS.get("none").encode(x)
    assert none.payload_nbytes == 4 * a.size and none.dtype == "float32"
    assert torch.equal(CODECS.get("none").decode(none), x)
    half = CODECS.get("fp16").encode(x)
    assert half.payload_nbytes == 2 * a.size and half.dtype == "float16"
    assert torch.equal(CODECS.get("fp16").decode(half), x.half().float())


@pytest.mark.parametrize(
    ("codec", "per_element", "extra"), [("quant8", 1, 5), ("fp16", 2, 0), ("none", 4, 0)]
)
def test_payload_sizes(codec, per_element, extra):
    x = torch.randn(4, 29, 29)
    e = CODECS.get(codec).encode(x)
    assert e.payload_nbytes == per_element * 4 * 29 * 29 + extra
    assert len(e.data) == per_element * 4 * 29 * 29


def test_batch_helpers_encode_each_sample_on_its_own():
    x = torch.stack([torch.linspace(-1, 1, 12).reshape(3, 4), 100 * torch.linspace(-1, 1, 12).reshape(3, 4)])
    encoded = encode_batch("quant8", x)
    assert len(encoded) == 2 and encoded[0].shape == (3, 4)
    assert encoded[1].scale == pytest.approx(100 * encoded[0].scale, rel=1e-6)  # per-sample scales
    x_hat = decode_batch(encoded)
    assert x_hat.shape == x.shape
    for i in range(2):
        assert (x_hat[i] - x[i]).abs().max().item() <= encoded[i].scale / 2 * (1 + 1e-4)
    assert torch.equal(decode_batch(encode_batch(CODECS.get("none"), x)), x)


def test_encoded_is_frozen_and_errors():
    e = quant8.encode(torch.ones(2))
    with pytest.raises(AttributeError):
        e.scale = 2.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="NaN"):
        quant8.encode(torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="do not fit"):
        quant8.decode(Encoded(b"\x00\x01", (3,), "uint8", "quant8", 1.0, 0))
    with pytest.raises(ValueError, match="float16 range"):
        CODECS.get("fp16").encode(torch.tensor([7e4]))
    with pytest.raises(ValueError, match="expects dtype"):
        CODECS.get("fp16").decode(e)


def _smooth_image(h: int = 64, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / (w - 1), yy * 255 / (h - 1), (xx + yy) * 255 / (h + w - 2)], axis=-1)
    return img.round().astype(np.uint8)


def test_jpeg_smaller_than_raw_for_a_smooth_image():
    img = _smooth_image()
    assert raw_nbytes(img) == 64 * 64 * 3
    n95 = jpeg_nbytes(img, quality=95)
    assert 0 < n95 < raw_nbytes(img)
    assert jpeg_nbytes(img, quality=50) < n95
    grey = img[:, :, :1]
    assert 0 < jpeg_nbytes(grey) < raw_nbytes(grey)
    assert raw_nbytes(torch.zeros(3, 8, 8, dtype=torch.uint8)) == 192


def test_jpeg_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        jpeg_nbytes(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        jpeg_nbytes(np.zeros((3, 8, 8), dtype=np.uint8))
