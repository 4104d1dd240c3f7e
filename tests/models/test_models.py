"""Tests of the model zoo: the split interface, determinism and validation."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from fedsim.errors import UserError
from fedsim.models import MODELS, SplitModel, build_model
from fedsim.models.cnn import CNNParams
from fedsim.models.resnet import ResNetParams

SHAPES = [(1, 8, 8), (3, 32, 32)]
NUM_CLASSES = 10
BATCH = 4

# Models whose defaults are too large for 8x8 inputs (ViT-S/14) are tested at a small size.
SMALL = {"timm_vit": {"patch_size": 4, "dim": 32, "depth": 2, "heads": 2}}
# (name, params): every registered model with defaults, plus non-default variants.
CONFIGS = [(name, SMALL.get(name, {})) for name in MODELS.names()] + [
    ("cnn", {"batch_norm": True, "channels": [16, 32, 64]}),
    ("resnet", {"shortcut": "conv", "depth": 14, "width": 8}),
    ("mlp", {"hidden": [32]}),
]
CASES = [(n, p, s) for n, p in CONFIGS for s in SHAPES]
IDS = [
    f"{n}-{'-'.join(f'{k}={v}' for k, v in p.items()) or 'default'}-{s[0]}x{s[1]}x{s[2]}" for n, p, s in CASES
]

# Sane parameter-count ranges for the default configurations.
PARAM_RANGE = {
    "cnn": (10_000, 100_000),
    "mlp": (10_000, 1_000_000),
    "resnet": (50_000, 150_000),
    "vit": (50_000, 200_000),
    "multimodal": (5_000, 100_000),
    "efficientnet_lite": (3_000_000, 4_000_000),
    "timm_vit": (20_000, 40_000),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def batch(shape: tuple[int, int, int], seed: int = 123) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, *shape, generator=g)


def test_registered_names() -> None:
    assert {"cnn", "mlp", "resnet", "vit", "multimodal"} <= set(MODELS.names())
    for entry in MODELS:
        assert entry.summary
        assert entry.params.model_config.get("extra") == "forbid"
        assert entry.params.model_config.get("frozen") is True
        entry.params()  # defaults validate


@pytest.mark.parametrize(("name", "params", "shape"), CASES, ids=IDS)
def test_split_interface(name: str, params: dict, shape: tuple[int, int, int]) -> None:
    model = build_model(name, params, shape, NUM_CLASSES, seed=0).eval()
    assert isinstance(model, SplitModel)
    assert isinstance(model.head, nn.Linear)
    assert model.head.in_features == model.feature_dim
    assert model.head.out_features == NUM_CLASSES
    assert model.num_classes == NUM_CLASSES
    x = batch(shape)
    with torch.no_grad():
        logits = model(x)
        feats = model.features(x)
        assert torch.equal(model.forward_features(x), feats)
        assert torch.equal(model.head(feats), logits)
    assert logits.shape == (BATCH, NUM_CLASSES)
    assert feats.shape == (BATCH, model.feature_dim)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("name", "params", "shape"), CASES, ids=IDS)
def test_backward_reaches_every_parameter(name: str, params: dict, shape: tuple[int, int, int]) -> None:
    model = build_model(name, params, shape, NUM_CLASSES, seed=0).train()
    loss = nn.functional.cross_entropy(model(batch(shape)), torch.arange(BATCH))
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname


@pytest.mark.parametrize(("name", "params", "shape"), CASES, ids=IDS)
def test_deterministic_init(name: str, params: dict, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(1)
    a = build_model(name, params, shape, NUM_CLASSES, seed=7).state_dict()
    torch.manual_seed(2)  # global state must not matter
    torch.rand(5)
    b = build_model(name, params, shape, NUM_CLASSES, seed=7).state_dict()
    c = build_model(name, params, shape, NUM_CLASSES, seed=8).state_dict()
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    weights = [k for k in a if k.endswith("weight") and a[k].is_floating_point()]
    assert weights
    assert any(not torch.equal(a[k], c[k]) for k in weights)
    assert not torch.equal(a["head.weight"], c["head.weight"])


@pytest.mark.parametrize("name", MODELS.names())
def test_global_rng_untouched(name: str) -> None:
    torch.manual_seed(42)
    before = torch.get_rng_state()
    build_model(name, {}, (3, 32, 32), NUM_CLASSES, seed=3)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", MODELS.names())
def test_param_count_in_range(name: str, shape: tuple[int, int, int]) -> None:
    lo, hi = PARAM_RANGE[name]
    assert lo <= n_params(build_model(name, SMALL.get(name, {}), shape, NUM_CLASSES, seed=0)) <= hi


def test_param_counts_hand_checked() -> None:
    # mlp, 1x8x8 -> 128 -> 64 -> 10: (64*128 + 128) + (128*64 + 64) + (64*10 + 10)
    assert n_params(build_model("mlp", {}, (1, 8, 8), 10, seed=0)) == 8320 + 8256 + 650
    # 3x32x32 input: 3072*128 + 128 replaces the first layer.
    assert n_params(build_model("mlp", {}, (3, 32, 32), 10, seed=0)) == 393344 + 8256 + 650
    # cnn, 1x8x8: conv 1->32 (320), conv 32->64 (18496), 2x2 pool -> 256 -> 128
    # (32896), head 128->10 (1290).
    assert n_params(build_model("cnn", {}, (1, 8, 8), 10, seed=0)) == 53002
    # resnet-8, width 16, option A shortcuts (no parameters), 3 input channels:
    # stem 432 + BN 32; stage1 2*2304 + 2*32; stage2 4608 + 9216 + 2*64;
    # stage3 18432 + 36864 + 2*128; head 650.
    assert n_params(build_model("resnet", {}, (3, 32, 32), 10, seed=0)) == 75290


@pytest.mark.parametrize("depth", [8, 14, 20])
def test_resnet_depth_counts_layers(depth: int) -> None:
    model = build_model("resnet", {"depth": depth}, (3, 32, 32), 10, seed=0)
    convs = [m for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and "shortcut" not in name]
    assert len(convs) + 1 == depth  # + the linear head
    assert model.feature_dim == 4 * 16


def test_resnet_bad_depth() -> None:
    with pytest.raises(ValidationError) as exc:
        build_model("resnet", {"depth": 9}, (3, 32, 32), 10, seed=0)
    msg = str(exc.value)
    assert "depth" in msg and "6n+2" in msg and "got 9" in msg


@pytest.mark.parametrize("name", MODELS.names())
def test_unknown_param_key(name: str) -> None:
    with pytest.raises(ValidationError) as exc:
        build_model(name, {"no_such_key": 1}, (1, 8, 8), 10, seed=0)
    assert "no_such_key" in str(exc.value)


@pytest.mark.parametrize(
    ("name", "params", "key"),
    [
        ("cnn", {"channels": []}, "channels"),
        ("cnn", {"feature_dim": 0}, "feature_dim"),
        ("mlp", {"hidden": [64, -1]}, "hidden"),
        ("resnet", {"width": 0}, "width"),
        ("resnet", {"shortcut": "B"}, "shortcut"),
    ],
)
def test_bad_param_values(name: str, params: dict, key: str) -> None:
    with pytest.raises(ValidationError) as exc:
        build_model(name, params, (1, 8, 8), 10, seed=0)
    assert key in str(exc.value)


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(UserError) as exc:
        build_model("vgg", {}, (3, 32, 32), 10, seed=0)
    msg = str(exc.value)
    assert "vgg" in msg
    for name in MODELS.names():
        assert name in msg


def test_params_instance_and_none_accepted() -> None:
    a = build_model("resnet", ResNetParams(width=8), (1, 8, 8), 10, seed=1)
    b = build_model("resnet", {"width": 8}, (1, 8, 8), 10, seed=1)
    assert a.feature_dim == b.feature_dim == 32
    c = build_model("cnn", None, (1, 8, 8), 10, seed=1)
    assert c.feature_dim == CNNParams().feature_dim


def test_bad_shape_and_classes() -> None:
    with pytest.raises(ValueError, match="input_shape"):
        build_model("cnn", {}, (8, 8), 10, seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes"):
        build_model("cnn", {}, (1, 8, 8), 0, seed=0)


@pytest.mark.parametrize("shape", [(3, 64, 64), (1, 28, 28), (3, 12, 20), (1, 1, 1)])
def test_cnn_other_sizes(shape: tuple[int, int, int]) -> None:
    model = build_model("cnn", {"batch_norm": True}, shape, 7, seed=0).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, *shape)).shape == (2, 7)


def test_features_sliceable() -> None:
    model = build_model("resnet", {}, (3, 32, 32), 10, seed=0).eval()
    assert isinstance(model.features, nn.Sequential)
    x = batch((3, 32, 32))
    with torch.no_grad():
        early = model.features[:2](x)
        assert torch.equal(model.features[2:](early), model.features(x))
