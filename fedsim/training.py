"""Plain training and evaluation loops shared by clients and the server.

Batches are cut from in-memory tensors with a permutation drawn from an explicit
``torch.Generator`` (no DataLoader, no global RNG), so a (seed, round, client)
triple fixes every step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedsim.config import OptimizerSpec
from fedsim.devices import module_device

Forward = Callable[[torch.Tensor], torch.Tensor]
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Stats:
    """Mean loss and accuracy over ``num_examples`` samples."""

    loss: float
    accuracy: float
    num_examples: int


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (seed, round, client, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def make_optimizer(params: Iterable[nn.Parameter], spec: OptimizerSpec) -> torch.optim.Optimizer:
    """The optimiser a scenario names."""
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain cross-entropy; returns (loss, logits)."""
    logits = model(x)
    return nn.functional.cross_entropy(logits, y), logits


def train_epochs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    loss_fn: LossFn = cross_entropy,
) -> Stats:
    """Train for ``epochs`` passes over (x, y) on the model's device; statistics of the last epoch."""
    model.train()
    device = module_device(model)
    x, y = x.to(device), y.to(device)
    n = len(y)
    loss, correct = 0.0, 0
    for _ in range(epochs):
        correct = 0

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            nonlocal correct
            yb = y[idx]
            loss, logits = loss_fn(model, x[idx], yb)
            correct += int((logits.detach().argmax(1) == yb).sum())
            return loss

        loss = optimise_epoch(n, batch_size, optimizer, generator, batch_loss)
    return Stats(loss, correct / max(n, 1), n)


def optimise_epoch(
    n: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    batch_loss: Callable[[torch.Tensor], torch.Tensor | None],
    clip: float | None = None,
) -> float:
    """One epoch over ``range(n)`` in shuffled batches, a step on each batch's loss; the mean loss.

    ``batch_loss(idx)`` returns the loss of the items ``idx``, or None to skip the batch.
    ``clip``: the gradients' total norm is clipped to it before each step.
    """
    total = 0.0
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(idx)
        if loss is None:
            continue
        loss.backward()
        if clip is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        total += float(loss.detach()) * len(idx)
    return total / max(n, 1)


@torch.no_grad()
def outputs(fn: Forward, x: torch.Tensor, device: torch.device, batch_size: int = 1024) -> torch.Tensor:
    """``fn`` over ``x`` in batches sent to ``device``; the outputs joined, on the CPU."""
    parts = [fn(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(parts) if parts else fn(x[:0].to(device)).cpu()


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> Stats:
    """Mean cross-entropy and accuracy of ``model`` on (x, y), batches sent to the model's device."""
    model.eval()
    device = module_device(model)
    n = len(y)
    total_loss, correct = 0.0, 0
    for start in range(0, n, batch_size):
        xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
        logits = model(xb)
        total_loss += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    return Stats(total_loss / max(n, 1), correct / max(n, 1), n)
