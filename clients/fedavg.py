"""FedAvg client: E local epochs of SGD on the client's data (McMahan et al. 2017)."""

from __future__ import annotations

import torch
from flwr.app import Context, Message

from clients.common import arrays_of, client_env, reply
from clients.registry import CLIENT_ALGORITHMS, ClientAlgorithm
from fedsim.metrics import class_group_index, group_accuracy, mask_absent, present_classes
from fedsim.training import evaluate, make_optimizer, train_epochs


def train(msg: Message, context: Context) -> Message:
    """Load the global model, train locally, send the new weights back."""
    env = client_env(msg, context)
    with env.timed():
        model = env.model(msg.content["arrays"])
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
    mask of classes absent from the client's training data, and per class group."""
    env = client_env(msg, context)
    with env.timed():
        model = env.model(msg.content["arrays"])
        stats = evaluate(model, env.data.x_test, env.data.y_test)
        logits = model(env.data.x_test)
        masked = mask_absent(logits, present_classes(env.data.y_train, logits.shape[1])).argmax(1)
        groups = class_group_index(env.scenario)
        y = env.data.y_test
        extra = {
            "accuracy-masked": float((masked == y).float().mean()) if len(y) else 0.0,
            **group_accuracy(logits.argmax(1), y, groups),
            **group_accuracy(masked, y, groups, prefix="accuracy-masked"),
        }
    return reply(msg, env, stats, **extra)


CLIENT_ALGORITHMS.register("fedavg")(ClientAlgorithm(train=train, evaluate=evaluate_local))
