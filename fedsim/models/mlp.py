"""Multi-layer perceptron on the flattened input."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field
from torch import nn

from fedsim.config import Params
from fedsim.models.base import SplitModel
from fedsim.models.zoo import MODELS, InputShape


class MLPParams(Params):
    """Parameters of ``mlp``."""

    hidden: tuple[Annotated[int, Field(ge=1, le=65536)], ...] = Field(
        default=(128, 64),
        min_length=1,
        max_length=16,
        description="widths of the hidden layers; the last is feature_dim",
    )


@MODELS.register(
    "mlp",
    params=MLPParams,
    summary="MLP on the flattened input; feature_dim = last hidden width",
)
def build_mlp(params: MLPParams, input_shape: InputShape, num_classes: int) -> SplitModel:
    """Flatten, then ``Linear + ReLU`` per hidden width, then the head.

    Parameters
    ----------
    params : MLPParams
        Hidden widths.
    input_shape : tuple of int
        ``(channels, height, width)``.
    num_classes : int
        Number of classes.

    Returns
    -------
    SplitModel
        ``features = Sequential(Flatten, Linear, ReLU, ...)``.
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in params.hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        width = h
    return SplitModel(nn.Sequential(*layers), width, num_classes)
