"""FedProx client (Li et al. 2020): local loss F_k(w) + (mu/2) ||w - w_t||^2.

``mu`` arrives as ``proximal-mu`` in the train config (Flower's key); w_t is the
global model received this round, held fixed during local training.
"""

from __future__ import annotations

import torch
from flwr.app import Context, Message
from torch import nn

from fedsim.clients.cohort import answer_groups
from fedsim.clients.common import ClientAlgorithm, arrays_of, client_env, reply, scalar
from fedsim.clients.fedavg import evaluate_cohort, evaluate_local, train_group
from fedsim.methods.fedprox import MU_KEY
from fedsim.training import cross_entropy


def proximal_loss(global_params: list[torch.Tensor], mu: float):
    """Cross-entropy plus (mu/2) * sum ||w - w_t||^2 over trainable parameters (``global_params``
    go to the model's device once, at the first batch)."""
    on_device: dict[torch.device, list[torch.Tensor]] = {}

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, logits = cross_entropy(model, x, y)
        if mu > 0:
            if x.device not in on_device:
                on_device[x.device] = [g.to(x.device) for g in global_params]
            anchor = on_device[x.device]
            prox = sum(((w - g) ** 2).sum() for w, g in zip(model.parameters(), anchor, strict=True))
            loss = loss + 0.5 * mu * prox
        return loss, logits

    return loss_fn


def train(msg: Message, context: Context) -> Message:
    """FedAvg's local training with the proximal term."""
    env = client_env(msg, context)
    mu = scalar(msg.content.config_records["config"][MU_KEY])
    with env.timed():
        model = env.model(msg.content.array_records["arrays"])
        global_params = [p.detach().clone() for p in model.parameters()]
        stats = env.local_epochs(model, loss_fn=proximal_loss(global_params, mu))
        arrays = arrays_of(model)
    return reply(msg, env, stats, arrays)


def train_cohort(messages: list[Message], contexts: list[Context]) -> list[Message]:
    """:func:`train` for several clients at once, trained as one vectorised cohort."""
    return answer_groups(
        messages, contexts, train_group(lambda msg: scalar(msg.content.config_records["config"][MU_KEY]))
    )


#: The client half, registered with the server half in :mod:`fedsim.algorithms`.
HANDLERS = ClientAlgorithm(
    train=train, evaluate=evaluate_local, train_cohort=train_cohort, evaluate_cohort=evaluate_cohort
)
