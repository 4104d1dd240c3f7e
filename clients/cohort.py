"""The cohort path of FedAvg-style clients: a round's train messages trained as one cohort.

Each message gets the reply its client's own handler would give (within float rounding,
see :mod:`fedsim.cohort`): the same data, seeded shuffles and optimiser, the same metrics.
Messages are trained together when they carry the same global arrays and the same train
config; the wall and CPU seconds of a cohort are shared out equally among its clients.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flwr.app import Context, Message

from fedsim.clients.common import ClientEnv, arrays_of, client_env, reply
from fedsim.cohort import ClientJob, train_cohort


def cohort_replies(
    messages: list[Message], contexts: list[Context], mu_of: Callable[[Message], float]
) -> list[Message]:
    """Train the clients of ``messages`` as cohorts; their replies, in order.

    ``mu_of(message)``: FedProx's proximal coefficient of the message (0 for FedAvg).
    """
    envs = [client_env(m, c) for m, c in zip(messages, contexts, strict=True)]
    groups: dict[tuple[int, str], list[int]] = {}
    for i, msg in enumerate(messages):
        config = msg.content.config_records.get("config")
        key = (id(msg.content.array_records["arrays"]), repr(sorted(dict(config or {}).items())))
        groups.setdefault(key, []).append(i)
    out: list[Message] = list(messages)  # every slot is replaced below
    for members in groups.values():
        answers = _train_group([messages[i] for i in members], [envs[i] for i in members], mu_of)
        for i, answer in zip(members, answers, strict=True):
            out[i] = answer
    return out


def _train_group(
    messages: list[Message], envs: list[ClientEnv], mu_of: Callable[[Message], float]
) -> list[Message]:
    first = envs[0]
    spec = first.scenario.train
    wall, cpu = time.perf_counter(), time.process_time()
    model = first.model(messages[0].content.array_records["arrays"])
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    jobs = [ClientJob(env.data.x_train, env.data.y_train, env.generator()) for env in envs]
    results = train_cohort(
        model,
        start,
        jobs,
        epochs=spec.local_epochs,
        batch_size=spec.batch_size,
        optimizer=spec.optimizer,
        prox_mu=mu_of(messages[0]),
    )
    seconds = {"compute-s": time.perf_counter() - wall, "cpu-s": time.process_time() - cpu}
    replies = []
    for msg, env, (weights, stats) in zip(messages, envs, results, strict=True):
        env.timings.update({k: v / len(envs) for k, v in seconds.items()})  # each client's share
        model.load_state_dict(weights)
        replies.append(reply(msg, env, stats, arrays_of(model)))
    return replies
