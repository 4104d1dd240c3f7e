"""Cohort training: many clients' local updates of one model as one vectorised computation.

Small-model federated simulation is dominated by per-step overhead: thousands of tiny
forward and backward passes. Here the clients of a cohort train together: their parameters
and buffers are stacked along a leading axis, one ``torch.func`` computation
(``functional_call`` + ``vmap`` + ``grad``) gives every client's gradient of its own batch,
and the optimiser is applied functionally per client, as ``torch.optim`` would. Each client
keeps its own seeded shuffle (the same ``randperm`` draws as
:func:`fedsim.training.train_epochs`), its own data, its own optimiser state and its own
BatchNorm running statistics, so the result equals training the clients one after another
up to float rounding.

Clients may hold different numbers of samples. At each step, the clients still training are
split by the size of their batch (a client's last batch may be short), and each part takes
its step as one vectorised call; a client whose epoch has ended takes no step at all, so its
weights, its optimiser state and its statistics are untouched (nothing is padded).

A cohort larger than the memory budget is trained in chunks (:func:`chunk_size`). Models
with dropout are not supported: it draws random numbers outside the client's generator
(:func:`unsupported_layer` names the layer).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedsim.config import OptimizerSpec
from fedsim.training import Stats

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as make_optimizer uses them
ADAM_EPS = 1e-8
#: Default memory budget of one chunk of a cohort (``train.cohort_memory_mb``).
DEFAULT_MEMORY_MB = 1024
#: Activations kept per sample for the backward pass, as a multiple of the forward outputs:
#: the outputs themselves, their gradients and vmap's temporaries.
ACTIVATION_FACTOR = 3

Params = dict[str, torch.Tensor]
#: The loss of a batch from the model's output: (loss, logits used for the accuracy).
Criterion = Callable[[object, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def cross_entropy_of(output: object, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The default criterion: the mean cross-entropy of the logits ``output``."""
    assert isinstance(output, torch.Tensor)
    return nn.functional.cross_entropy(output, y), output


@dataclass(frozen=True)
class ClientJob:
    """One client's local training: its samples, its seeded generator (shuffles) and the
    weights it starts from where they are its own (a local head), by state_dict key."""

    x: torch.Tensor
    y: torch.Tensor
    generator: torch.Generator
    own: Params = field(default_factory=dict)


def unsupported_layer(model: nn.Module) -> str | None:
    """The first layer that prevents cohort training (``"name (Type)"``), or None."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return f"{name} ({type(module).__name__}: random numbers outside the client's generator)"
    return None


def chunk_size(
    model: nn.Module, sample: torch.Tensor, batch_size: int, optimizer: OptimizerSpec, memory_mb: float
) -> int:
    """How many clients one chunk of a cohort trains together within ``memory_mb``.

    Per client: its trainable weights four times over (weights, gradient, update and the
    optimiser's state: one more copy for Adam), its buffers, and the activations of a batch
    (the model's layer outputs for ``sample``, one input, times ``batch_size`` and
    :data:`ACTIVATION_FACTOR`). At least one client.
    """
    weights = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    copies = 5 if optimizer.name == "adam" else 4
    per_client = weights * copies + buffers + activation_bytes(model, sample) * batch_size * ACTIVATION_FACTOR
    return max(1, int(memory_mb * 2**20 // max(per_client, 1)))


@torch.no_grad()
def activation_bytes(model: nn.Module, sample: torch.Tensor) -> int:
    """Bytes of every leaf layer's output for one input ``sample`` (no batch axis)."""
    total = 0

    def count(_m: nn.Module, _i: object, out: object) -> None:
        nonlocal total
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    was_training = model.training
    try:
        model.eval()  # BatchNorm on one input: use the running statistics, change nothing
        model(sample.unsqueeze(0))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total


def train_cohort(
    model: nn.Module,
    start: Params,
    jobs: Sequence[ClientJob],
    *,
    epochs: int,
    batch_size: int,
    optimizer: OptimizerSpec,
    prox_mu: float = 0.0,
    criterion: Criterion = cross_entropy_of,
    chunk: int | None = None,
) -> list[tuple[Params, Stats]]:
    """Train every job's client from the weights ``start``; per client, its weights and stats.

    Parameters
    ----------
    model : nn.Module
        The architecture (its own weights are not used or changed). Its parameters that do not
        require a gradient are frozen; its buffers not in ``start`` are shared and constant.
    start : dict of str to Tensor
        The weights every client starts from (a ``state_dict`` of ``model``); a job's ``own``
        tensors replace the entries of the same keys for that client.
    jobs : sequence of ClientJob
        Each client's samples, generator and own starting weights.
    epochs, batch_size : int
        As for :func:`fedsim.training.train_epochs`.
    optimizer : OptimizerSpec
        SGD (momentum, weight decay) or Adam (weight decay), as ``make_optimizer`` builds them.
    prox_mu : float
        FedProx's proximal coefficient: the loss gains ``mu / 2 * ||w - start||^2`` over the
        trainable weights shared by all clients.
    criterion : callable
        ``(model output, y) -> (loss, logits)``; cross-entropy by default.
    chunk : int, optional
        At most this many clients train together (see :func:`chunk_size`); all by default.

    Returns
    -------
    list of (dict, Stats)
        In the order of ``jobs``: the client's trained ``state_dict`` and the statistics of
        its last epoch (mean loss, accuracy, samples).

    Raises
    ------
    ValueError
        When the model has a layer :func:`unsupported_layer` names.
    """
    blocked = unsupported_layer(model)
    if blocked is not None:
        raise ValueError(f"cohort training cannot train layer {blocked}")
    step = max(1, chunk or len(jobs))
    out: list[tuple[Params, Stats]] = []
    for begin in range(0, len(jobs), step):
        part = jobs[begin : begin + step]
        out += _Cohort(model, start, part, optimizer, prox_mu, criterion).run(epochs, batch_size)
    return out


class _Cohort:
    """Clients trained in lockstep: one vectorised call per step and batch size."""

    def __init__(
        self,
        model: nn.Module,
        start: Params,
        jobs: Sequence[ClientJob],
        spec: OptimizerSpec,
        mu: float,
        criterion: Criterion,
    ) -> None:
        self.model, self.jobs, self.spec, self.mu, self.criterion = model, jobs, spec, mu, criterion
        names = [k for k, p in model.named_parameters() if p.requires_grad]
        buffers = [k for k, _ in model.named_buffers() if k in start]

        def stacked(k: str) -> torch.Tensor:
            return torch.stack([job.own.get(k, start[k]).detach() for job in jobs]).clone()

        self.params = {k: stacked(k) for k in names}
        self.buffers = {k: stacked(k) for k in buffers}
        self.fixed = {
            k: v.detach() for k, v in start.items() if k not in self.params and k not in self.buffers
        }
        shared = set().union(*(job.own for job in jobs)) if jobs else set()
        self.anchor = {k: start[k].detach() for k in names if k not in shared}
        self.state: dict[str, dict[str, torch.Tensor]] = {k: {} for k in names}
        self.steps = torch.zeros(len(jobs), dtype=torch.long)  # optimiser steps taken, per client
        self.step_fn = vmap(grad(self._loss, has_aux=True))

    def _loss(
        self, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        output = functional_call(self.model, {**params, **buffers, **self.fixed}, (x,))
        loss, logits = self.criterion(output, y)
        if self.mu > 0:
            prox = sum(((params[k] - self.anchor[k]) ** 2).sum() for k in self.anchor)
            loss = loss + 0.5 * self.mu * prox
        return loss, (loss.detach(), logits.detach())

    def run(self, epochs: int, batch_size: int) -> list[tuple[Params, Stats]]:
        """Every epoch's shuffled steps; each client's weights and last-epoch stats."""
        self.model.train()
        sizes = [len(job.y) for job in self.jobs]
        totals, correct = [0.0] * len(sizes), [0] * len(sizes)
        for _ in range(epochs):
            orders = [
                torch.randperm(n, generator=job.generator) for n, job in zip(sizes, self.jobs, strict=True)
            ]
            totals, correct = [0.0] * len(sizes), [0] * len(sizes)
            for begin in range(0, max(sizes, default=0), batch_size):
                by_size: dict[int, list[int]] = defaultdict(list)
                for c, n in enumerate(sizes):
                    if n > begin:
                        by_size[min(batch_size, n - begin)].append(c)
                for members in by_size.values():
                    idx = [orders[c][begin : begin + batch_size] for c in members]
                    loss, hits = self._take_step(members, idx)
                    for c, i, value, hit in zip(members, idx, loss, hits, strict=True):
                        totals[c] += value * len(i)
                        correct[c] += hit
        return [
            (
                {
                    **{k: v[c].clone() for k, v in self.params.items()},
                    **{k: v[c].clone() for k, v in self.buffers.items()},
                    **self.fixed,
                },
                Stats(totals[c] / max(n, 1), correct[c] / max(n, 1), n),
            )
            for c, n in enumerate(sizes)
        ]

    def _take_step(self, members: list[int], idx: list[torch.Tensor]) -> tuple[list[float], list[int]]:
        """One step of the clients ``members`` on their batches ``idx``; their losses and hits."""
        everyone = len(members) == len(self.jobs)
        rows = None if everyone else torch.tensor(members)

        def part(tensors: Params) -> Params:
            return tensors if rows is None else {k: v[rows] for k, v in tensors.items()}

        params, buffers = part(self.params), part(self.buffers)
        state = {k: part(s) for k, s in self.state.items()}
        xb = torch.stack([self.jobs[c].x[i] for c, i in zip(members, idx, strict=True)])
        yb = torch.stack([self.jobs[c].y[i] for c, i in zip(members, idx, strict=True)])
        grads, (loss, logits) = self.step_fn(params, buffers, xb, yb)
        self.steps[members] += 1
        self._update(params, grads, state, self.steps[members])
        if rows is not None:  # write the part back
            for k, v in params.items():
                self.params[k][rows] = v
            for k, v in buffers.items():
                self.buffers[k][rows] = v
            for k, s in state.items():
                for name, v in s.items():
                    self.state[k].setdefault(name, torch.zeros_like(self.params[k]))[rows] = v
        hits = (logits.argmax(-1) == yb).sum(1).tolist()
        return loss.tolist(), [int(h) for h in hits]

    def _update(self, params: Params, grads: Params, state: dict[str, Params], steps: torch.Tensor) -> None:
        """One optimiser step for the clients of ``params``, as torch.optim's SGD or Adam takes it
        (``steps``: each client's step count, this one included)."""
        spec = self.spec
        for k, p in params.items():
            d = grads[k]
            if spec.weight_decay:
                d = d.add(p, alpha=spec.weight_decay)
            s = state[k]
            if spec.name == "adam":
                beta1, beta2 = ADAM_BETAS
                # the bias corrections in double precision, per client, as torch takes them
                t = steps.double().view((-1,) + (1,) * (p.dim() - 1))
                step_size = (-spec.lr / (1 - beta1**t)).to(p.dtype)
                correction2 = (1 - beta2**t).sqrt().to(p.dtype)
                m = s.setdefault("m", torch.zeros_like(p)).lerp_(d, 1 - beta1)
                v = s.setdefault("v", torch.zeros_like(p)).mul_(beta2).addcmul_(d, d, value=1 - beta2)
                denom = (v.sqrt() / correction2).add_(ADAM_EPS)
                p.add_(m / denom * step_size)
                continue
            if spec.momentum:
                # torch's first step sets the buffer to d: a zero buffer times momentum, plus d
                d = s.setdefault("momentum", torch.zeros_like(p)).mul_(spec.momentum).add_(d)
            p.add_(d, alpha=-spec.lr)
