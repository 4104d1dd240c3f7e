"""CIFAR-style ResNet (He et al., 2016, "Deep Residual Learning", section 4.2)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from fedsim.config import Params
from fedsim.models.base import SplitModel
from fedsim.models.zoo import MODELS, InputShape


class ResNetParams(Params):
    """Parameters of ``resnet``."""

    depth: int = Field(default=8, ge=8, le=1202, description="6n+2 layers: 8, 14, 20, 32, 44, 56, 110")
    width: int = Field(default=16, ge=1, le=512, description="channels of the first stage")
    shortcut: Literal["pad", "conv"] = Field(
        default="pad",
        description="downsampling shortcut: 'pad' = strided identity with zero-padded "
        "channels (option A, the paper's CIFAR choice), 'conv' = 1x1 conv + BN "
        "(option B)",
    )

    @field_validator("depth")
    @classmethod
    def _six_n_plus_two(cls, v: int) -> int:
        if (v - 2) % 6 != 0:
            lo = (v - 2) // 6 * 6 + 2
            raise ValueError(
                f"resnet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), "
                f"got {v}; nearest are {lo} and {lo + 6}"
            )
        return v


class _PadShortcut(nn.Module):
    """Option A shortcut: subsample by ``stride`` and zero-pad the channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_ch - in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return x


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection, ReLU after the sum.

    Parameters
    ----------
    in_ch, out_ch : int
        Input and output channels.
    stride : int
        Stride of the first conv (and of the shortcut).
    shortcut : {"pad", "conv"}
        Shortcut used when the shape changes.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, shortcut: Literal["pad", "conv"]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module
        if stride == 1 and in_ch == out_ch:
            self.shortcut = nn.Identity()
        elif shortcut == "pad":
            self.shortcut = _PadShortcut(in_ch, out_ch, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


@MODELS.register(
    "resnet",
    params=ResNetParams,
    summary="CIFAR ResNet-(6n+2) with BasicBlocks; feature_dim = 4*width",
)
def build_resnet(params: ResNetParams, input_shape: InputShape, num_classes: int) -> SplitModel:
    """CIFAR ResNet: 3x3 stem, three stages of n BasicBlocks, global average pool.

    Stages have ``width``, ``2*width`` and ``4*width`` channels; the second and
    third halve the resolution (32 -> 32, 16, 8; 8 -> 8, 4, 2). Convs use He
    (fan-out) normal initialisation, BatchNorm starts at weight 1, bias 0.

    Parameters
    ----------
    params : ResNetParams
        Depth (6n+2), base width and shortcut type.
    input_shape : tuple of int
        ``(channels, height, width)``.
    num_classes : int
        Number of classes.

    Returns
    -------
    SplitModel
        ``features = Sequential(stem, stage1, stage2, stage3, pool)`` with
        ``feature_dim = 4 * width``.
    """
    n = (params.depth - 2) // 6
    w = params.width
    stem = nn.Sequential(
        nn.Conv2d(input_shape[0], w, 3, padding=1, bias=False),
        nn.BatchNorm2d(w),
        nn.ReLU(inplace=True),
    )
    stages: list[nn.Module] = []
    in_ch = w
    for i, out_ch in enumerate((w, 2 * w, 4 * w)):
        blocks = []
        for j in range(n):
            stride = 2 if i > 0 and j == 0 else 1
            blocks.append(BasicBlock(in_ch, out_ch, stride, params.shortcut))
            in_ch = out_ch
        stages.append(nn.Sequential(*blocks))
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    features = nn.Sequential(stem, *stages, pool)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return SplitModel(features, 4 * w, num_classes)
