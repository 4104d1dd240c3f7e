"""The model registry and ``build_model``.

Each entry of ``MODELS`` is a builder ``(params, input_shape, num_classes) ->
SplitModel``; its parameter model validates the scenario's ``model.params``.
Architectures register themselves in their own modules (``cnn``, ``mlp``,
``resnet``), which ``fedsim.models`` imports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from pydantic import BaseModel

from fedsim.models.base import SplitModel
from fedsim.registry import Registry

InputShape = tuple[int, int, int]
"""``(channels, height, width)`` of one input sample."""

ModelBuilder = Callable[[Any, InputShape, int], SplitModel]
"""``(params, input_shape, num_classes) -> SplitModel``."""

MODELS: Registry[ModelBuilder] = Registry("model")


def _check_shape(input_shape: tuple[int, ...], num_classes: int) -> InputShape:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (channels, height, width), got {input_shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    return (shape[0], shape[1], shape[2])


def build_model(
    name: str,
    params: Mapping[str, Any] | BaseModel | None,
    input_shape: tuple[int, int, int],
    num_classes: int,
    seed: int,
) -> SplitModel:
    """Build the registered model ``name`` with a deterministic initialisation.

    The parameters are initialised from a CPU generator seeded with ``seed``
    inside ``torch.random.fork_rng``: the same seed gives a bit-identical
    ``state_dict``, and the global RNG state is neither read nor changed.

    Parameters
    ----------
    name : str
        A name registered in ``MODELS``.
    params : Mapping[str, Any] or BaseModel or None
        Parameters, validated by the entry's parameter model (``None`` means
        all defaults). An instance of that model is used as is.
    input_shape : tuple of int
        ``(channels, height, width)`` of one sample.
    num_classes : int
        Number of classes (outputs of the head).
    seed : int
        Seed of the initialisation.

    Returns
    -------
    SplitModel
        The model, on CPU, in training mode.

    Raises
    ------
    UserError
        If ``name`` is not registered (the message lists the known names).
    pydantic.ValidationError
        If ``params`` do not validate (the message names the offending key).
    """
    entry = MODELS.entry(name)
    if isinstance(params, entry.params):
        validated = params
    else:
        validated = entry.params.model_validate(dict(params or {}))
    shape = _check_shape(input_shape, num_classes)
    with torch.random.fork_rng(devices=[]):
        # Seed only the CPU generator: torch.manual_seed would also reseed CUDA,
        # whose state fork_rng(devices=[]) does not restore.
        torch.default_generator.manual_seed(int(seed))
        model = entry.obj(validated, shape, num_classes)
    if not isinstance(model, SplitModel):
        raise TypeError(f"model {name!r} builder returned {type(model).__name__}")
    if model.head.in_features != model.feature_dim:
        raise TypeError(f"model {name!r}: head does not match feature_dim")
    return model
