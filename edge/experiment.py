"""The data of a BottleFit experiment: its dataset (resized when asked), raw input bytes.

The experiment's schema is :class:`fedsim.config.Experiment` (``kind: bottlefit``);
:func:`fedsim.loader.load_experiment` loads one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from fedsim.config import Experiment, ImageDataSpec
from fedsim.data import Dataset, Images, load_dataset


def experiment_data(exp: Experiment) -> Dataset:
    """The experiment's dataset, resized to ``data.image_size`` when that is set."""
    return spec_data(exp.data, exp.seed)


def spec_data(spec: ImageDataSpec, seed: int) -> Dataset:
    """The dataset an :class:`~fedsim.config.ImageDataSpec` names, resized to its ``image_size``.

    Resizing is bilinear (antialiased when shrinking) on the normalised images; since
    the normalisation is affine per channel, ``mean`` and ``std`` still undo it.
    """
    data = load_dataset(spec.dataset, spec.options, seed)
    size = spec.image_size
    if size is None or data.input_shape[1:] == (size, size):
        return data

    def resize(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1]
        ).contiguous()

    return dataclasses.replace(
        data, train=Images.normalised(resize(data.x_train)), test=Images.normalised(resize(data.x_test))
    )


def raw_uint8(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Undo the normalisation: uint8 images ``[N, H, W, C]`` (what a camera would hand over).

    Parameters
    ----------
    x : torch.Tensor
        Normalised images ``[N, C, H, W]`` (or one image ``[C, H, W]``).
    mean, std : tuple of float
        The dataset's per-channel statistics.

    Returns
    -------
    np.ndarray
        ``round(clamp(x * std + mean, 0, 1) * 255)`` as uint8, channels last.
    """
    batch = x.unsqueeze(0) if x.dim() == 3 else x
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    raw = ((batch * s + m).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    out = raw.contiguous().numpy()
    return out[0] if x.dim() == 3 else out
