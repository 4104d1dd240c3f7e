"""FLOPs of one forward pass, counted from the convolutions and linear layers a module runs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def count_flops(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on one sample: 2 x the multiply-accumulates of conv and linear layers.

    Parameters
    ----------
    module : nn.Module
        Put in eval mode for the count (and restored).
    input_shape : tuple of int
        One sample's shape, e.g. ``(3, 64, 64)``.

    Returns
    -------
    int
        ``2 * sum(MACs)`` over every ``nn.Conv2d`` and ``nn.Linear`` (biases, norms,
        activations and pooling not counted).
    """
    macs = 0

    def conv_hook(m: nn.Conv2d, inputs: Any, out: torch.Tensor) -> None:
        nonlocal macs
        kh, kw = m.kernel_size
        macs += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, inputs: Any, out: torch.Tensor) -> None:
        nonlocal macs
        macs += out.numel() * m.in_features

    handles = []
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            handles.append(sub.register_forward_hook(conv_hook))
        elif isinstance(sub, nn.Linear):
            handles.append(sub.register_forward_hook(linear_hook))
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return 2 * macs
