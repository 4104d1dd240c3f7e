"""FedAvg client: E local epochs of SGD on the client's data (McMahan et al. 2017)."""

from __future__ import annotations

import torch
from flwr.app import Context, Message

from fedsim.clients.cohort import cohort_replies
from fedsim.clients.common import ClientAlgorithm, arrays_of, client_env, reply
from fedsim.metrics import local_accuracy, local_class_groups, mask_absent, present_classes
from fedsim.training import evaluate, make_optimizer, train_epochs


def train(msg: Message, context: Context) -> Message:
    """Load the global model, train locally, send the new weights back."""
    env = client_env(msg, context)
    with env.timed():
        model = env.model(msg.content.array_records["arrays"])
        spec = env.scenario.train
        stats = train_epochs(
            model,
            env.data.x_train,
            env.data.y_train,
            epochs=spec.local_epochs,
            batch_size=spec.batch_size,
            optimizer=make_optimizer(model.parameters(), spec.optimizer),
            generator=env.generator(),
        )
        arrays = arrays_of(model)
    return reply(msg, env, stats, arrays)


@torch.no_grad()
def evaluate_local(msg: Message, context: Context) -> Message:
    """The global model on the client's local test set: accuracy without and with the
    mask of classes absent from that test set, each also per class group of this client."""
    env = client_env(msg, context)
    with env.timed():
        model = env.model(msg.content.array_records["arrays"])
        stats = evaluate(model, env.data.x_test, env.data.y_test)
        logits = model(env.data.x_test)
        y, c = env.data.y_test, logits.shape[1]
        groups = local_class_groups(y, c)
        extra = {
            **local_accuracy(logits, y, groups),
            **local_accuracy(mask_absent(logits, present_classes(y, c)), y, groups, "accuracy-masked"),
        }
        extra.pop("accuracy")  # the same value as stats.accuracy
    return reply(msg, env, stats, **extra)


def train_cohort(messages: list[Message], contexts: list[Context]) -> list[Message]:
    """:func:`train` for several clients at once, trained as one vectorised cohort."""
    return cohort_replies(messages, contexts, lambda msg: 0.0)


#: The client half, registered with the server half in :mod:`fedsim.algorithms`.
HANDLERS = ClientAlgorithm(train=train, evaluate=evaluate_local, train_cohort=train_cohort)
