"""FedAvg client: E local epochs of SGD on the client's data (McMahan et al. 2017)."""

from __future__ import annotations

from flwr.app import Context, Message

from clients.common import arrays_of, client_env, reply
from clients.registry import CLIENT_ALGORITHMS, ClientAlgorithm
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


def evaluate_local(msg: Message, context: Context) -> Message:
    """Accuracy of the global model on the client's local test set."""
    env = client_env(msg, context)
    with env.timed():
        model = env.model(msg.content["arrays"])
        stats = evaluate(model, env.data.x_test, env.data.y_test)
    return reply(msg, env, stats)


CLIENT_ALGORITHMS.register("fedavg")(ClientAlgorithm(train=train, evaluate=evaluate_local))
