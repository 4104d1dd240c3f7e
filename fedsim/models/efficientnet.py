"""EfficientNet-Lite (Tan & Le, 2019, "EfficientNet"; the TF "Lite" variants for edge devices).

Lite drops squeeze-and-excitation, uses ReLU6 everywhere and keeps the stem (32
channels), the head (1280 channels) and the repeats of the first and last stages fixed
whatever the width and depth multipliers. Convolutions use TF "same" padding computed
from the input size in ``forward``. Parameter names follow ``efficientnet_pytorch``
(``_conv_stem``, ``_bn0``, ``_blocks.{i}.*``, ``_conv_head``, ``_bn1``), so published
checkpoints (without their ``_fc`` classifier) load strictly into ``features``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from fedsim.config import Params
from fedsim.models.base import SplitModel
from fedsim.models.zoo import MODELS, InputShape

INPUT_MEAN = 127.0
"""Pixels in [0, 255] are normalised as ``(x - INPUT_MEAN) / INPUT_STD`` for the TF weights."""
INPUT_STD = 128.0
"""See ``INPUT_MEAN``."""

#: (width multiplier, depth multiplier, native resolution) of each variant.
VARIANTS: dict[str, tuple[float, float, int]] = {
    "lite0": (1.0, 1.0, 224),
    "lite1": (1.0, 1.1, 240),
    "lite2": (1.1, 1.2, 260),
    "lite3": (1.2, 1.4, 280),
    "lite4": (1.4, 1.8, 300),
}
#: The B0 stages: (repeats, kernel, stride, expand ratio, in channels, out channels).
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # PyTorch convention: 1 - TF's decay of 0.99


class EfficientNetLiteParams(Params):
    """Parameters of ``efficientnet_lite``."""

    variant: Literal["lite0", "lite1", "lite2", "lite3", "lite4"] = Field(
        default="lite0",
        description="width/depth scaling: lite0 (1.0, 1.0) ... lite4 (1.4, 1.8)",
    )


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width``, rounded to a multiple of ``divisor``.

    Parameters
    ----------
    filters : int
        Channels of the B0 table.
    width : float
        Width multiplier.
    divisor : int
        The result is a multiple of this, at least ``divisor`` and not below 90 %
        of ``filters * width``.

    Returns
    -------
    int
        The scaled channel count.
    """
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's block count by ``depth``, rounding up."""
    return math.ceil(depth * repeats)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class SameConv2d(nn.Conv2d):
    """Bias-free ``Conv2d`` with TF "same" padding computed from the input in ``forward``.

    Each spatial side is padded by ``max((ceil(n / s) - 1) * s + k - n, 0)`` in total,
    ``total // 2`` before and the rest after, so the output has ``ceil(n / s)`` pixels.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(in_ch, out_ch, kernel, stride=stride, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for n, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excitation (the Lite MBConv).

    ``[expand 1x1 - BN - ReLU6] - depthwise kxk - BN - ReLU6 - project 1x1 - BN``, plus
    the input when ``stride == 1`` and ``in_ch == out_ch``.

    Parameters
    ----------
    in_ch, out_ch : int
        Input and output channels.
    kernel : int
        Side of the depthwise kernel.
    stride : int
        Stride of the depthwise convolution.
    expand : int
        Expansion ratio; no expansion conv (nor ``_bn0``) when it is 1.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite feature extractor: stem, MBConv blocks, 1x1 head, global pool.

    Expects inputs normalised as ``(x - INPUT_MEAN) / INPUT_STD`` from [0, 255] pixels
    (see ``input_scaling``) when used with the TF-trained weights.

    Parameters
    ----------
    variant : str
        ``"lite0"`` ... ``"lite4"``.
    in_channels : int
        Channels of the input.

    Attributes
    ----------
    out_features : int
        Width of the pooled features, always ``HEAD_CHANNELS`` (1280).
    """

    out_features = HEAD_CHANNELS
    input_scaling: tuple[float, float] = (INPUT_MEAN, INPUT_STD)
    """``(mean, std)``: pixels in [0, 255] are mapped to ``(x - mean) / std``."""

    def __init__(self, variant: str = "lite0", in_channels: int = 3) -> None:
        super().__init__()
        width, depth, _ = VARIANTS[variant]
        self._conv_stem = SameConv2d(in_channels, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks: list[nn.Module] = []
        in_ch = STEM_CHANNELS
        for i, (repeats, kernel, stride, expand, _, out) in enumerate(STAGES):
            fixed = i in (0, len(STAGES) - 1)  # Lite: first and last stages keep their depth
            n = repeats if fixed else round_repeats(repeats, depth)
            out_ch = round_filters(out, width)
            for j in range(n):
                blocks.append(MBConvBlock(in_ch, out_ch, kernel, stride if j == 0 else 1, expand))
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(in_ch, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        """Map pixels in [0, 255] to the scale the TF weights expect: ``(x - 127) / 128``."""
        return (x - INPUT_MEAN) / INPUT_STD

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, 1280]`` of an input batch ``[B, C, H, W]``."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


@MODELS.register(
    "efficientnet_lite",
    params=EfficientNetLiteParams,
    summary="EfficientNet-Lite0..4 (no SE, ReLU6, TF same padding); feature_dim = 1280",
)
def build_efficientnet_lite(
    params: EfficientNetLiteParams, input_shape: InputShape, num_classes: int
) -> SplitModel:
    """EfficientNet-Lite features (``efficientnet_pytorch`` parameter names) and a linear head.

    Any input size works ("same" padding; the total stride is 32, a map is never below
    1 pixel); the native resolutions are 224, 240, 260, 280 and 300 for lite0..lite4.
    Convs use He (fan-out) normal initialisation, BatchNorm starts at weight 1, bias 0.

    Parameters
    ----------
    params : EfficientNetLiteParams
        The variant.
    input_shape : tuple of int
        ``(channels, height, width)``; the stem takes ``channels`` inputs.
    num_classes : int
        Number of classes.

    Returns
    -------
    SplitModel
        ``features = EfficientNetLite(...)`` with ``feature_dim = 1280``.
    """
    features = EfficientNetLite(params.variant, in_channels=input_shape[0])
    return SplitModel(features, HEAD_CHANNELS, num_classes)
