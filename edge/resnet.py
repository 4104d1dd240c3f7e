"""ResNets with torchvision's module names, and small ResNets for 32-64 px inputs.

The ImageNet models (``resnet18``, ``resnet50``, ``resnet152``) reproduce torchvision's
architecture and ``state_dict()`` keys exactly (He et al., "Deep Residual Learning for Image
Recognition", CVPR 2016; torchvision's v1.5 variant with the stride on the 3x3 conv of the
Bottleneck block), so a torchvision checkpoint saved with ``torch.save(model.state_dict())``
loads with :func:`load_torchvision_checkpoint` without torchvision installed.

``ResNet.stages()`` exposes the model as six top-level stages (stem, layer1..layer4, pool_fc)
whose sequential composition is ``forward``: the split points of edge computing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

STAGE_NAMES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4", "pool_fc")


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with a residual connection (ResNet-50+)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet with torchvision's attribute names.

    Parameters
    ----------
    block : type
        ``BasicBlock`` or ``Bottleneck``.
    layers : Sequence[int]
        Number of blocks in layer1..layer4.
    num_classes : int
        Outputs of the final linear layer.
    in_channels : int
        Input image channels.
    width : int
        Channels of the stem and of layer1's blocks (64 for ImageNet models); layer2..layer4
        double it each time.
    small_stem : bool
        If True, the stem is a 3x3 stride-1 conv (for 32-64 px inputs) instead of 7x7 stride 2.
    stem_pool : bool
        Whether the stem ends in a 3x3 stride-2 max pool (otherwise ``nn.Identity``).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        width: int = 64,
        small_stem: bool = False,
        stem_pool: bool = True,
    ):
        super().__init__()
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {tuple(layers)}")
        self.inplanes = width
        if small_stem:
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem_pool else nn.Identity()
        )
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers: list[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def stages(self) -> list[tuple[str, nn.Module]]:
        """The six top-level stages in order; their composition equals ``forward`` exactly.

        Returns
        -------
        list of (str, nn.Module)
            ``stem`` (conv1, bn1, relu, maxpool), ``layer1``..``layer4`` and ``pool_fc``
            (avgpool, flatten, fc). ``stem`` and ``pool_fc`` are ``nn.Sequential`` views that
            share this model's modules (no copies).
        """
        return [
            ("stem", nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)),
            ("layer1", self.layer1),
            ("layer2", self.layer2),
            ("layer3", self.layer3),
            ("layer4", self.layer4),
            ("pool_fc", nn.Sequential(self.avgpool, nn.Flatten(1), self.fc)),
        ]

    def stage_channels(self) -> dict[str, int]:
        """Output channels of each convolutional stage (``stem``, ``layer1``..``layer4``)."""
        out = {"stem": self.conv1.out_channels}
        for name in STAGE_NAMES[1:5]:
            last = getattr(self, name)[-1]
            out[name] = (last.bn3 if isinstance(last, Bottleneck) else last.bn2).num_features
        return out


def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet-18 (11,689,512 parameters at 1000 classes), torchvision-compatible."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes)


def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50 (25,557,032 parameters at 1000 classes), torchvision-compatible."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes)


def resnet152(num_classes: int = 1000) -> ResNet:
    """ResNet-152 (60,192,808 parameters at 1000 classes), torchvision-compatible."""
    return ResNet(Bottleneck, (3, 8, 36, 3), num_classes)


def small_resnet(
    num_classes: int,
    in_channels: int = 3,
    width: int = 16,
    blocks: Sequence[int] = (1, 1, 1, 1),
    stem_pool: bool = False,
) -> ResNet:
    """A BasicBlock ResNet for 32-64 px inputs, with the same stages as the ImageNet models.

    Parameters
    ----------
    num_classes : int
        Outputs of the classifier.
    in_channels : int
        Input image channels.
    width : int
        Channels of the stem and layer1; layer2..layer4 have 2, 4 and 8 times as many.
    blocks : Sequence[int]
        BasicBlocks in layer1..layer4.
    stem_pool : bool
        False (for 32 px): the stem keeps the resolution (3x3 stride-1 conv, no pooling).
        True (for 64 px): the stem ends in a 3x3 stride-2 max pool, halving the resolution.

    Returns
    -------
    ResNet
        Stem 3x3 stride 1; layer outputs at strides 1, 2, 4, 8 (times 2 with ``stem_pool``).
    """
    return ResNet(
        BasicBlock, tuple(blocks), num_classes, in_channels, width, small_stem=True, stem_pool=stem_pool
    )


def load_torchvision_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a torchvision-layout checkpoint into ``model``, strictly (every key and shape).

    Parameters
    ----------
    model : nn.Module
        The model to fill in place (usually a :class:`ResNet`).
    path : str or Path
        A state dict saved with ``torch.save`` (``state_dict``/``model`` wrappers and a
        ``module.`` prefix are handled), a safetensors file or an ONNX model's initializers
        (:mod:`fedsim.pretrained`).

    Raises
    ------
    UserError
        If the file is missing or unreadable, or does not fit the model (the message names
        the first missing, unexpected or misshapen key).
    """
    from fedsim.pretrained import fit_tensors, read_tensors

    path = Path(path)
    fitted = fit_tensors(model, read_tensors(path), "torchvision_resnet", repr(str(path)))
    model.load_state_dict(fitted.state, strict=True)
