"""BottleFit bottleneck injection: shapes at every boundary, exact head/tail split, copies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedsim.edge.bottlefit import BottleneckError, SplitClassifier, inject_bottleneck, teacher_stages
from fedsim.edge.resnet import resnet18, resnet50, resnet152, small_resnet
from fedsim.errors import UserError


def test_resnet152_layer2_reproduces_the_reference():
    student = inject_bottleneck(resnet152(), "layer2", channels=12, input_size=224)
    enc = [type(m).__name__ for m in student.encoder]
    assert enc == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "BatchNorm2d", "ReLU", "Conv2d"]
    assert student.encoder[0].kernel_size == (7, 7) and student.encoder[0].stride == (2, 2)
    last = student.encoder[-1]
    assert (last.in_channels, last.out_channels, last.kernel_size, last.stride) == (64, 12, (2, 2), (2, 2))
    convs = [m for m in student.decoder if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.padding) for c in convs] == [
        (12, 512, (1, 1)),
        (512, 512, (1, 1)),
        (512, 512, (0, 0)),
        (512, 512, (0, 0)),
    ]
    assert isinstance(student.decoder[0], nn.BatchNorm2d) and isinstance(student.decoder[-1], nn.AvgPool2d)
    assert len(student.kept) == 3  # layer3, layer4, pool_fc
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        student.eval()
        z = student.encoder(x)
        assert tuple(z.shape) == (1, 12, 29, 29)
        # torchvision's ResNet-152 layer2 output at 224 px (the teacher's forward is too slow to run here)
        assert tuple(student.decoder(z).shape) == (1, 512, 28, 28)


@pytest.mark.parametrize(("make", "channels"), [(resnet18, 128), (resnet50, 512)])
def test_imagenet_resnets_layer2(make, channels):
    teacher = make().eval()
    student = inject_bottleneck(teacher, "layer2", channels=4, input_size=224).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        z = student.head(x)
        assert tuple(z.shape) == (1, 4, 29, 29)
        boundary = teacher.layer2(
            teacher.layer1(teacher.maxpool(teacher.relu(teacher.bn1(teacher.conv1(x)))))
        )
        assert tuple(student.decoder(z).shape) == (1, channels, 28, 28) == tuple(boundary.shape)


SMALL_CASES = [
    # (stem_pool, input size, split, bottleneck h, boundary (C, h, w))
    (False, 32, "layer1", 33, (16, 32, 32)),
    (False, 32, "layer2", 17, (32, 16, 16)),
    (True, 64, "layer1", 33, (16, 32, 32)),
    (True, 64, "layer2", 17, (32, 16, 16)),
    (False, 32, "layer3", 9, (64, 8, 8)),
    (True, 64, "layer4", 5, (128, 4, 4)),
]


@pytest.mark.parametrize(("stem_pool", "size", "split", "h", "boundary"), SMALL_CASES)
def test_small_resnet_splits(stem_pool, size, split, h, boundary):
    torch.manual_seed(0)
    teacher = small_resnet(10, stem_pool=stem_pool).eval()
    student = inject_bottleneck(teacher, split, channels=2, input_size=size).eval()
    assert student.split == split and student.bottleneck_channels == 2
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        z = student.head(x)
        assert tuple(z.shape) == (3, 2, h, h)
        s_out = student.forward_stages(x)
        t_out = teacher_stages(teacher, x, split)
        assert len(s_out) == len(t_out) == 1 + len(student.kept)
        assert [o.shape for o in s_out] == [o.shape for o in t_out]
        assert tuple(s_out[0].shape[1:]) == boundary
        assert tuple(s_out[-1].shape) == (3, 10)
        assert torch.equal(s_out[-1], student(x))
        assert [o.shape for o in student.teacher_stages(teacher, x)] == [o.shape for o in t_out]


@pytest.mark.parametrize("train", [False, True])
def test_head_then_tail_equals_forward_exactly(train):
    torch.manual_seed(1)
    student = inject_bottleneck(small_resnet(10, in_channels=1), "layer2", channels=4, input_size=32)
    student.train(train)
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        torch.manual_seed(2)  # BN in train mode is deterministic; the seed is belt and braces
        want = student(x)
        got = student.tail(student.head(x))
    assert torch.equal(got, want)
    assert student.head is student.encoder
    tail = student.tail
    assert isinstance(tail, nn.Module) and tail[0] is student.decoder and tail[1] is student.kept[0]
    assert tail.training == train  # the container's flag follows the model's


def test_tail_mode_survives_save_and_restore():
    # what torch.onnx.export does: remember the container's mode, eval, then train(remembered)
    student = inject_bottleneck(small_resnet(10), "layer2", channels=2, input_size=32).eval()
    tail = student.tail
    remembered = tail.training
    tail.eval()
    tail.train(remembered)
    assert not any(m.training for m in student.modules())


def test_kept_stages_are_copies_of_the_teacher():
    teacher = small_resnet(10)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = inject_bottleneck(teacher, "layer1", channels=1, input_size=32)
    kept_l2 = student.kept[0]
    assert kept_l2 is not teacher.layer2
    for a, b in zip(kept_l2.parameters(), teacher.layer2.parameters(), strict=True):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    student.train()(torch.randn(2, 3, 32, 32))  # updates the student's BN statistics only
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_injection_leaves_teacher_mode_and_statistics_alone():
    teacher = small_resnet(10).train()
    before = teacher.bn1.running_mean.clone()
    student = inject_bottleneck(teacher, "layer2", input_size=32)
    assert teacher.training and student.training
    assert torch.equal(teacher.bn1.running_mean, before)
    assert int(teacher.bn1.num_batches_tracked) == 0


def test_errors():
    teacher = small_resnet(10)
    with pytest.raises(BottleneckError, match="unknown split 'layer5'"):
        inject_bottleneck(teacher, "layer5")
    with pytest.raises(ValueError, match="channels must be >= 1"):
        inject_bottleneck(teacher, "layer2", channels=0)
    # 30 px: layer2 gives 15x15, the bottleneck 16x16, the decoder 15x15 -> fits
    inject_bottleneck(teacher, "layer2", input_size=30)
    # 31 px: layer2 gives 16x16 but the bottleneck 16x16 and the decoder 15x15
    with pytest.raises(ValueError, match=r"does not match the teacher's layer2 output \(32, 16, 16\)"):
        inject_bottleneck(teacher, "layer2", input_size=31)
    with pytest.raises(UserError):
        teacher_stages(teacher, torch.zeros(1, 3, 32, 32), "stem")


def test_split_classifier_is_a_plain_module():
    student = inject_bottleneck(small_resnet(3), "layer2", channels=2, input_size=32)
    assert isinstance(student, SplitClassifier)
    keys = list(student.state_dict())
    assert keys[0].startswith("encoder.") and any(k.startswith("decoder.") for k in keys)
    assert any(k.startswith("kept.2.") for k in keys)  # pool_fc's fc
    assert not any(k.startswith(("head.", "tail.")) for k in keys)
