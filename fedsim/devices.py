"""Where the arithmetic runs: ``train.device`` (``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``).

Models live on the CPU between calls: records, checkpoints and the caches of
:mod:`fedsim.workspace` only ever see CPU tensors. The compute-heavy part of a call (a
client's local epochs, its evaluation, the server's public epochs) runs inside
:func:`placed`, which moves the modules (and the optimisers' state) to the device and back
when the block ends. The loops of :mod:`fedsim.training` send each batch to the device of
the model they train, so the data stays where the data layer put it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from fedsim.errors import UserError

CPU = torch.device("cpu")


def _available(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    return kind == "cpu"


def resolve(name: str) -> torch.device:
    """The device ``train.device`` names on this machine.

    ``auto``: the first CUDA device where there is one, else the CPU. A device this machine
    lacks is a `UserError` naming it and what the machine has.
    """
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else CPU
    device = torch.device(name)
    if not _available(device.type):
        built = "without CUDA" if torch.version.cuda is None else f"with CUDA {torch.version.cuda}"
        raise UserError(
            f"train.device is {name!r} but this machine has no {device.type} device "
            f"(torch {torch.__version__} built {built}); expected cpu or auto"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(
            f"train.device is {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s); "
            "expected an index below that, cuda or auto"
        )
    return device


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); the CPU for an empty module."""
    for param in module.parameters():
        return param.device
    for buffer in module.buffers():
        return buffer.device
    return CPU


def move_optimizer(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move an optimiser's state tensors (momentum, Adam moments) to ``device``."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                state[key] = value.to(device)


@contextmanager
def placed(
    device: torch.device, *modules: nn.Module, optimizers: Iterable[torch.optim.Optimizer] = ()
) -> Iterator[torch.device]:
    """Run the block with ``modules`` (and ``optimizers``' state) on ``device``; back on the CPU after.

    Parameters keep their identity (``Module.to`` moves their data in place), so optimisers
    built before or inside the block stay attached to them. Nothing moves when ``device``
    is the CPU.
    """
    opts = list(dict.fromkeys(optimizers))  # a shared optimiser moves once
    if device == CPU:
        yield device
        return
    for module in modules:
        module.to(device)
    for opt in opts:
        move_optimizer(opt, device)
    try:
        yield device
    finally:
        for module in modules:
            module.to(CPU)
        for opt in opts:
            move_optimizer(opt, CPU)
