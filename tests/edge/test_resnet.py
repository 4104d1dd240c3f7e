"""torchvision-compatible ResNets: names, shapes, parameter counts, stages, checkpoint loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedsim.edge.resnet import load_torchvision_checkpoint, resnet18, resnet50, resnet152, small_resnet
from fedsim.errors import UserError

# torchvision.models.resnet18().named_parameters(), written out by hand.
RESNET18_PARAMS: list[tuple[str, tuple[int, ...]]] = [
    ("conv1.weight", (64, 3, 7, 7)),
    ("bn1.weight", (64,)),
    ("bn1.bias", (64,)),
    ("layer1.0.conv1.weight", (64, 64, 3, 3)),
    ("layer1.0.bn1.weight", (64,)),
    ("layer1.0.bn1.bias", (64,)),
    ("layer1.0.conv2.weight", (64, 64, 3, 3)),
    ("layer1.0.bn2.weight", (64,)),
    ("layer1.0.bn2.bias", (64,)),
    ("layer1.1.conv1.weight", (64, 64, 3, 3)),
    ("layer1.1.bn1.weight", (64,)),
    ("layer1.1.bn1.bias", (64,)),
    ("layer1.1.conv2.weight", (64, 64, 3, 3)),
    ("layer1.1.bn2.weight", (64,)),
    ("layer1.1.bn2.bias", (64,)),
    ("layer2.0.conv1.weight", (128, 64, 3, 3)),
    ("layer2.0.bn1.weight", (128,)),
    ("layer2.0.bn1.bias", (128,)),
    ("layer2.0.conv2.weight", (128, 128, 3, 3)),
    ("layer2.0.bn2.weight", (128,)),
    ("layer2.0.bn2.bias", (128,)),
    ("layer2.0.downsample.0.weight", (128, 64, 1, 1)),
    ("layer2.0.downsample.1.weight", (128,)),
    ("layer2.0.downsample.1.bias", (128,)),
    ("layer2.1.conv1.weight", (128, 128, 3, 3)),
    ("layer2.1.bn1.weight", (128,)),
    ("layer2.1.bn1.bias", (128,)),
    ("layer2.1.conv2.weight", (128, 128, 3, 3)),
    ("layer2.1.bn2.weight", (128,)),
    ("layer2.1.bn2.bias", (128,)),
    ("layer3.0.conv1.weight", (256, 128, 3, 3)),
    ("layer3.0.bn1.weight", (256,)),
    ("layer3.0.bn1.bias", (256,)),
    ("layer3.0.conv2.weight", (256, 256, 3, 3)),
    ("layer3.0.bn2.weight", (256,)),
    ("layer3.0.bn2.bias", (256,)),
    ("layer3.0.downsample.0.weight", (256, 128, 1, 1)),
    ("layer3.0.downsample.1.weight", (256,)),
    ("layer3.0.downsample.1.bias", (256,)),
    ("layer3.1.conv1.weight", (256, 256, 3, 3)),
    ("layer3.1.bn1.weight", (256,)),
    ("layer3.1.bn1.bias", (256,)),
    ("layer3.1.conv2.weight", (256, 256, 3, 3)),
    ("layer3.1.bn2.weight", (256,)),
    ("layer3.1.bn2.bias", (256,)),
    ("layer4.0.conv1.weight", (512, 256, 3, 3)),
    ("layer4.0.bn1.weight", (512,)),
    ("layer4.0.bn1.bias", (512,)),
    ("layer4.0.conv2.weight", (512, 512, 3, 3)),
    ("layer4.0.bn2.weight", (512,)),
    ("layer4.0.bn2.bias", (512,)),
    ("layer4.0.downsample.0.weight", (512, 256, 1, 1)),
    ("layer4.0.downsample.1.weight", (512,)),
    ("layer4.0.downsample.1.bias", (512,)),
    ("layer4.1.conv1.weight", (512, 512, 3, 3)),
    ("layer4.1.bn1.weight", (512,)),
    ("layer4.1.bn1.bias", (512,)),
    ("layer4.1.conv2.weight", (512, 512, 3, 3)),
    ("layer4.1.bn2.weight", (512,)),
    ("layer4.1.bn2.bias", (512,)),
    ("fc.weight", (1000, 512)),
    ("fc.bias", (1000,)),
]


def test_resnet18_parameter_names_and_shapes_match_torchvision():
    got = [(k, tuple(v.shape)) for k, v in resnet18().named_parameters()]
    assert got == RESNET18_PARAMS


def test_resnet18_state_dict_adds_batchnorm_buffers():
    sd = resnet18().state_dict()
    params = {k for k, _ in RESNET18_PARAMS}
    buffers = [k for k in sd if k not in params]
    # every BatchNorm: the 1-d ".weight" parameters that have a ".bias" beside them, except fc
    bns = sorted(
        k.removesuffix(".weight") for k, shape in RESNET18_PARAMS if len(shape) == 1 and "fc" not in k
    )
    bns = [b for b in bns if not b.endswith(".bias")]
    assert len(bns) == 20
    want = sorted(f"{b}.{s}" for b in bns for s in ("running_mean", "running_var", "num_batches_tracked"))
    assert sorted(buffers) == want
    assert len(sd) == 122
    # torchvision's order: parameters and buffers of each module together.
    assert list(sd)[:6] == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
    ]


@pytest.mark.parametrize(
    ("make", "count", "n_keys"),
    [(resnet18, 11_689_512, 122), (resnet50, 25_557_032, 320), (resnet152, 60_192_808, 932)],
)
def test_parameter_counts_match_torchvision(make, count, n_keys):
    model = make()
    assert sum(p.numel() for p in model.parameters()) == count
    assert len(model.state_dict()) == n_keys


def test_resnet50_bottleneck_names():
    sd = resnet50(num_classes=10).state_dict()
    assert tuple(sd["layer1.0.conv3.weight"].shape) == (256, 64, 1, 1)
    assert tuple(sd["layer1.0.downsample.0.weight"].shape) == (256, 64, 1, 1)
    assert tuple(sd["layer2.0.conv2.weight"].shape) == (128, 128, 3, 3)  # stride on the 3x3 (v1.5)
    assert tuple(sd["fc.weight"].shape) == (10, 2048)


@pytest.mark.parametrize(
    ("make", "size"),
    [
        (lambda: resnet18(num_classes=7), 64),
        (lambda: small_resnet(10), 32),
        (lambda: small_resnet(10, in_channels=1, width=8, blocks=(2, 1, 1, 1), stem_pool=True), 64),
    ],
)
def test_stages_compose_to_forward_exactly(make, size):
    torch.manual_seed(0)
    model = make().eval()
    names = [n for n, _ in model.stages()]
    assert names == ["stem", "layer1", "layer2", "layer3", "layer4", "pool_fc"]
    x = torch.randn(2, model.conv1.in_channels, size, size)
    with torch.no_grad():
        y = x
        for _, stage in model.stages():
            y = stage(y)
        assert torch.equal(y, model(x))


def test_stages_share_the_models_modules():
    model = small_resnet(10)
    stages = dict(model.stages())
    assert stages["stem"][0] is model.conv1
    assert stages["pool_fc"][2] is model.fc
    assert stages["layer3"] is model.layer3


@pytest.mark.parametrize(("stem_pool", "size", "layer1_hw"), [(False, 32, 32), (True, 64, 32)])
def test_small_resnet_shapes(stem_pool, size, layer1_hw):
    model = small_resnet(5, width=16, stem_pool=stem_pool).eval()
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    shapes = []
    y = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        for _, stage in model.stages():
            y = stage(y)
            shapes.append(tuple(y.shape[1:]))
    h = layer1_hw
    assert shapes == [
        (16, h, h),
        (16, h, h),
        (32, h // 2, h // 2),
        (64, h // 4, h // 4),
        (128, h // 8, h // 8),
        (5,),
    ]
    assert model.stage_channels() == {"stem": 16, "layer1": 16, "layer2": 32, "layer3": 64, "layer4": 128}


def test_load_checkpoint_round_trip(tmp_path: Path):
    src = small_resnet(10)
    path = tmp_path / "ck.pt"
    torch.save(src.state_dict(), path)
    dst = small_resnet(10)
    load_torchvision_checkpoint(dst, path)
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k])


def test_load_checkpoint_unwraps_and_strips_module_prefix(tmp_path: Path):
    src = small_resnet(4)
    path = tmp_path / "ck.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    dst = small_resnet(4)
    load_torchvision_checkpoint(dst, path)
    assert torch.equal(dst.fc.weight, src.fc.weight)


def test_load_checkpoint_names_missing_and_unexpected_keys(tmp_path: Path):
    sd = small_resnet(10).state_dict()
    sd.pop("fc.bias")
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "ck.pt"
    torch.save(sd, path)
    with pytest.raises(UserError, match=r"does not fit the model: missing key fc\.bias$"):
        load_torchvision_checkpoint(small_resnet(10), path)
    sd["fc.bias"] = torch.zeros(10)
    torch.save(sd, path)
    with pytest.raises(UserError, match=r"unexpected key extra\.weight$"):
        load_torchvision_checkpoint(small_resnet(10), path)


def test_load_checkpoint_wrong_shape_and_missing_file(tmp_path: Path):
    path = tmp_path / "ck.pt"
    torch.save(small_resnet(10).state_dict(), path)
    with pytest.raises(
        UserError,
        match=r"misshapen key fc\.weight \(10, 128\) in the file, \(3, 128\) in the model \(and 1 more\)",
    ):
        load_torchvision_checkpoint(small_resnet(3), path)
    with pytest.raises(UserError, match="not found"):
        load_torchvision_checkpoint(small_resnet(3), tmp_path / "nope.pt")
