"""FedAvg client: E local epochs of SGD on the client's data (McMahan et al. 2017)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from flwr.app import Context, Message
from torch import nn

from fedsim.clients.cohort import GroupAnswer, answer_groups, outputs_together, shared_time, train_together
from fedsim.clients.common import ClientAlgorithm, ClientEnv, arrays_of, client_env, reply
from fedsim.devices import placed
from fedsim.metrics import local_accuracy, local_class_groups, mask_absent, present_classes
from fedsim.training import Stats, outputs


def train(msg: Message, context: Context) -> Message:
    """Load the global model, train locally, send the new weights back."""
    env = client_env(msg, context)
    with env.timed():
        model = env.model(msg.content.array_records["arrays"])
        stats = env.local_epochs(model)
        arrays = arrays_of(model)
    return reply(msg, env, stats, arrays)


def local_metrics(logits: torch.Tensor, y: torch.Tensor) -> tuple[Stats, dict[str, float]]:
    """The global model's logits on a client's local test set: its stats and the accuracy
    without and with the mask of classes absent from that test set, each also per class group
    of this client."""
    n, c = len(y), logits.shape[1]
    loss = float(nn.functional.cross_entropy(logits, y, reduction="sum")) / n if n else 0.0
    groups = local_class_groups(y, c)
    extra = {
        **local_accuracy(logits, y, groups),
        **local_accuracy(mask_absent(logits, present_classes(y, c)), y, groups, "accuracy-masked"),
    }
    accuracy = extra.pop("accuracy")
    return Stats(loss, accuracy, n), extra


@torch.no_grad()
def evaluate_local(msg: Message, context: Context) -> Message:
    """The global model on the client's local test set (see :func:`local_metrics`)."""
    env = client_env(msg, context)
    with env.timed():
        model = env.model(msg.content.array_records["arrays"])
        model.eval()
        with placed(env.device, model) as device:
            logits = outputs(model, env.data.x_test, device)
        stats, extra = local_metrics(logits, env.data.y_test)
    return reply(msg, env, stats, **extra)


def train_group(mu_of: Callable[[Message], float]) -> GroupAnswer:
    """:func:`train` for a group of messages, trained as one vectorised cohort (``mu_of``:
    FedProx's proximal coefficient of a message; 0 for FedAvg)."""

    def answer(messages: list[Message], envs: list[ClientEnv], _contexts: list[Context]) -> list[Message]:
        with shared_time(envs):
            model = envs[0].model(messages[0].content.array_records["arrays"])
            results, chunk = train_together(model, envs, prox_mu=mu_of(messages[0]))
            replies = []
            for msg, env, (weights, stats) in zip(messages, envs, results, strict=True):
                model.load_state_dict(weights)
                replies.append((msg, env, stats, arrays_of(model)))
        return [reply(m, e, s, a, **{"cohort-chunk": chunk}) for m, e, s, a in replies]

    return answer


def train_cohort(messages: list[Message], contexts: list[Context]) -> list[Message]:
    """:func:`train` for several clients at once, trained as one vectorised cohort."""
    return answer_groups(messages, contexts, train_group(lambda msg: 0.0))


def evaluate_cohort(messages: list[Message], contexts: list[Context]) -> list[Message]:
    """:func:`evaluate_local` for several clients at once: one batched pass of the global model."""

    def answer(messages: list[Message], envs: list[ClientEnv], _contexts: list[Context]) -> list[Message]:
        with shared_time(envs):
            model = envs[0].model(messages[0].content.array_records["arrays"])
            model.eval()
            logits = outputs_together(model, [env.data.x_test for env in envs])
            results = [local_metrics(z, env.data.y_test) for z, env in zip(logits, envs, strict=True)]
        together = {"cohort-chunk": len(envs)}
        return [reply(m, e, s, **x, **together) for m, e, (s, x) in zip(messages, envs, results, strict=True)]

    return answer_groups(messages, contexts, answer)


#: The client half, registered with the server half in :mod:`fedsim.algorithms`.
HANDLERS = ClientAlgorithm(
    train=train, evaluate=evaluate_local, train_cohort=train_cohort, evaluate_cohort=evaluate_cohort
)
