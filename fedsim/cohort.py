"""Cohort training: many clients' local updates of one model as one vectorised computation.

Small-model federated simulation is dominated by per-step overhead: thousands of tiny
forward and backward passes. Here the clients of a cohort that start from the same weights
train together: their parameters are stacked along a leading axis, one ``torch.func``
computation (``functional_call`` + ``vmap`` + ``grad``) gives every client's gradient of
its own batch, and the optimiser is applied functionally per client, as ``torch.optim``
would. Each client keeps its own seeded shuffle (the same ``randperm`` draws as
:func:`fedsim.training.train_epochs`), its own data and its own optimiser state, so the
result equals training the clients one after another up to float rounding.

Clients are grouped by their number of samples, so that every client of a group takes
the same steps with batches of the same size (nothing is padded). Models whose layers keep
per-client running state (BatchNorm's running statistics) or draw random numbers (dropout)
are not supported yet: :func:`unsupported_layer` names the first such layer.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedsim.config import OptimizerSpec
from fedsim.training import Stats

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as make_optimizer uses them
ADAM_EPS = 1e-8

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ClientJob:
    """One client's local training: its samples and its seeded generator (shuffles)."""

    x: torch.Tensor
    y: torch.Tensor
    generator: torch.Generator


def unsupported_layer(model: nn.Module) -> str | None:
    """The first layer that prevents cohort training (``"name (Type)"``), or None."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            return f"{name} ({type(module).__name__}: running statistics per client)"
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return f"{name} ({type(module).__name__}: random numbers outside the client's generator)"
    return None


def train_cohort(
    model: nn.Module,
    start: Params,
    jobs: list[ClientJob],
    *,
    epochs: int,
    batch_size: int,
    optimizer: OptimizerSpec,
    prox_mu: float = 0.0,
) -> list[tuple[Params, Stats]]:
    """Train every job's client from the weights ``start``; per client, its weights and stats.

    Parameters
    ----------
    model : nn.Module
        The architecture (its own weights are not used or changed).
    start : dict of str to Tensor
        The weights every client starts from (a ``state_dict`` of ``model``).
    jobs : list of ClientJob
        Each client's samples and generator.
    epochs, batch_size : int
        As for :func:`fedsim.training.train_epochs`.
    optimizer : OptimizerSpec
        SGD (momentum, weight decay) or Adam (weight decay), as ``make_optimizer`` builds them.
    prox_mu : float
        FedProx's proximal coefficient: the loss gains ``mu / 2 * ||w - start||^2``.

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
    groups: dict[int, list[int]] = defaultdict(list)
    for i, job in enumerate(jobs):
        groups[len(job.y)].append(i)
    out: list[tuple[Params, Stats] | None] = [None] * len(jobs)
    for n, members in groups.items():
        trainer = _GroupTrainer(model, start, [jobs[i] for i in members], optimizer, prox_mu)
        for i, result in zip(members, trainer.run(n, epochs, batch_size), strict=True):
            out[i] = result
    return [r for r in out if r is not None]


class _GroupTrainer:
    """Clients with the same number of samples, trained in lockstep."""

    def __init__(
        self, model: nn.Module, start: Params, jobs: list[ClientJob], spec: OptimizerSpec, mu: float
    ) -> None:
        self.model, self.jobs, self.spec, self.mu = model, jobs, spec, mu
        names = [k for k, p in model.named_parameters() if p.requires_grad]
        g = len(jobs)
        self.params = {k: start[k].detach().unsqueeze(0).expand(g, *start[k].shape).clone() for k in names}
        self.fixed = {k: v.detach() for k, v in start.items() if k not in self.params}
        self.anchor = {k: start[k].detach() for k in names}
        self.state: dict[str, dict[str, torch.Tensor]] = {k: {} for k in names}
        self.steps = 0
        self.step_fn = vmap(grad(self._loss, has_aux=True))

    def _loss(
        self, params: Params, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        logits = functional_call(self.model, {**params, **self.fixed}, (x,))
        loss = nn.functional.cross_entropy(logits, y)
        if self.mu > 0:
            prox = sum(((params[k] - self.anchor[k]) ** 2).sum() for k in params)
            loss = loss + 0.5 * self.mu * prox
        return loss, (loss.detach(), logits.detach())

    def run(self, n: int, epochs: int, batch_size: int) -> list[tuple[Params, Stats]]:
        """Every epoch's shuffled steps; each client's weights and last-epoch stats."""
        self.model.train()
        g = len(self.jobs)
        totals, correct = [0.0] * g, [0] * g
        for _ in range(epochs):
            orders = [torch.randperm(n, generator=job.generator) for job in self.jobs]
            totals, correct = [0.0] * g, [0] * g
            for begin in range(0, n, batch_size):
                idx = [order[begin : begin + batch_size] for order in orders]
                xb = torch.stack([job.x[i] for job, i in zip(self.jobs, idx, strict=True)])
                yb = torch.stack([job.y[i] for job, i in zip(self.jobs, idx, strict=True)])
                grads, (loss, logits) = self.step_fn(self.params, xb, yb)
                self._step(grads)
                hits = (logits.argmax(-1) == yb).sum(1).tolist()
                for c, (value, hit) in enumerate(zip(loss.tolist(), hits, strict=True)):
                    totals[c] += value * len(idx[c])
                    correct[c] += int(hit)
        return [
            (
                {**{k: v[c].clone() for k, v in self.params.items()}, **self.fixed},
                Stats(totals[c] / max(n, 1), correct[c] / max(n, 1), n),
            )
            for c in range(g)
        ]

    def _step(self, grads: Params) -> None:
        """One optimiser step for every client, as torch.optim's SGD or Adam takes it."""
        spec = self.spec
        self.steps += 1
        for k, p in self.params.items():
            d = grads[k]
            if spec.weight_decay:
                d = d.add(p, alpha=spec.weight_decay)
            state = self.state[k]
            if spec.name == "adam":
                beta1, beta2 = ADAM_BETAS
                m = state.setdefault("m", torch.zeros_like(p)).lerp_(d, 1 - beta1)
                v = state.setdefault("v", torch.zeros_like(p)).mul_(beta2).addcmul_(d, d, value=1 - beta2)
                correction2 = math.sqrt(1 - beta2**self.steps)
                denom = (v.sqrt() / correction2).add_(ADAM_EPS)
                p.addcdiv_(m, denom, value=-spec.lr / (1 - beta1**self.steps))
                continue
            if spec.momentum:
                buf = state.get("momentum")
                d = state["momentum"] = d.clone() if buf is None else buf.mul_(spec.momentum).add_(d)
            p.add_(d, alpha=-spec.lr)
