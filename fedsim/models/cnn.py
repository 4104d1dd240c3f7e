"""A small CNN for inputs from 8x8 grey digits to 64x64 RGB."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch import nn

from fedsim.config import Params
from fedsim.models.base import SplitModel
from fedsim.models.zoo import MODELS, InputShape


class CNNParams(Params):
    """Parameters of ``cnn``."""

    channels: tuple[Annotated[int, Field(ge=1, le=1024)], ...] = Field(
        default=(32, 64),
        min_length=1,
        max_length=6,
        description="output channels of each conv block",
    )
    feature_dim: int = Field(default=128, ge=1, le=8192)
    batch_norm: bool = Field(default=False, description="BatchNorm after each conv")
    pool_size: int = Field(
        default=2,
        ge=1,
        le=8,
        description="side of the adaptive average pool before the dense layer "
        "(clamped to the feature map's size)",
    )


@MODELS.register(
    "cnn",
    params=CNNParams,
    summary="small CNN: conv3x3[-BN]-ReLU-maxpool blocks, adaptive pool, dense",
)
def build_cnn(params: CNNParams, input_shape: InputShape, num_classes: int) -> SplitModel:
    """Conv blocks, adaptive average pool, then ``Linear + ReLU`` to feature_dim.

    Each block is ``Conv3x3(pad 1) [-BN] - ReLU - MaxPool2d(2)``; the max pool
    is skipped once the map is down to 1 pixel on a side, so any input of at
    least 1x1 works (8x8 digits go 8 -> 4 -> 2 with the default two blocks).

    Parameters
    ----------
    params : CNNParams
        Channels, feature width, batch norm and pool size.
    input_shape : tuple of int
        ``(channels, height, width)``.
    num_classes : int
        Number of classes.

    Returns
    -------
    SplitModel
        ``features = Sequential(block, ..., AdaptiveAvgPool2d, Flatten, Linear,
        ReLU)``.
    """
    in_ch, h, w = input_shape
    layers: list[nn.Module] = []
    for out_ch in params.channels:
        block: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=not params.batch_norm)]
        if params.batch_norm:
            block.append(nn.BatchNorm2d(out_ch))
        block.append(nn.ReLU(inplace=True))
        if min(h, w) >= 2:
            block.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        layers.append(nn.Sequential(*block))
        in_ch = out_ch
    ph, pw = min(params.pool_size, h), min(params.pool_size, w)
    layers += [
        nn.AdaptiveAvgPool2d((ph, pw)),
        nn.Flatten(),
        nn.Linear(in_ch * ph * pw, params.feature_dim),
        nn.ReLU(inplace=True),
    ]
    return SplitModel(nn.Sequential(*layers), params.feature_dim, num_classes)
