"""The cohort path of the clients: a round's train (or evaluate) messages answered together.

Each message gets the reply its client's own handler would give (within float rounding,
see :mod:`fedsim.cohort`): the same data, seeded shuffles and optimiser, the same metrics.
Messages are answered together when they carry the same global arrays and the same config;
the wall and CPU seconds of a cohort are shared out equally among its clients, and each reply
says how many clients were computed together with it (``cohort-chunk``: a train chunk, or all
the clients of a batched evaluation).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from flwr.app import Context, Message
from torch import nn

from fedsim.clients.common import ClientEnv, client_env
from fedsim.cohort import ClientJob, Criterion, Params, chunk_size, cross_entropy_of, train_cohort
from fedsim.training import Stats

#: Rows of one forward pass of a batched evaluation (the clients' test sets concatenated).
EVAL_ROWS = 2048

#: Answers one group of messages (same arrays, same config) with their envs and contexts.
GroupAnswer = Callable[[list[Message], list[ClientEnv], list[Context]], list[Message]]


def answer_groups(messages: list[Message], contexts: list[Context], answer: GroupAnswer) -> list[Message]:
    """The replies to ``messages``, in order: ``answer`` called once per group of messages that
    carry the same global arrays and the same config."""
    envs = [client_env(m, c) for m, c in zip(messages, contexts, strict=True)]
    groups: dict[tuple[int, str], list[int]] = {}
    for i, msg in enumerate(messages):
        config = msg.content.config_records.get("config")
        key = (id(msg.content.array_records["arrays"]), repr(sorted(dict(config or {}).items())))
        groups.setdefault(key, []).append(i)
    out: list[Message] = list(messages)  # every slot is replaced below
    for members in groups.values():
        replies = answer(
            [messages[i] for i in members], [envs[i] for i in members], [contexts[i] for i in members]
        )
        for i, r in zip(members, replies, strict=True):
            out[i] = r
    return out


@contextmanager
def shared_time(envs: Sequence[ClientEnv]) -> Iterator[None]:
    """The wall and CPU seconds of the enclosed work, shared out equally among ``envs``."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    seconds = {"compute-s": time.perf_counter() - wall, "cpu-s": time.process_time() - cpu}
    for env in envs:
        for k, v in seconds.items():
            env.timings[k] = env.timings.get(k, 0.0) + v / len(envs)


def train_together(
    model: nn.Module,
    envs: Sequence[ClientEnv],
    *,
    prox_mu: float = 0.0,
    own: Sequence[Params] | None = None,
    criterion: Criterion = cross_entropy_of,
) -> tuple[list[tuple[Params, Stats]], int]:
    """Every env's client trained from ``model``'s weights (and its ``own`` ones) as cohorts of
    at most the chunk ``train.cohort_memory_mb`` allows; their results and that chunk."""
    spec = envs[0].scenario.train
    sample = envs[0].data.x_train[:1]
    chunk = (
        chunk_size(model, sample[0], spec.batch_size, spec.optimizer, spec.cohort_memory_mb)
        if len(sample)
        else 1
    )
    jobs = [
        ClientJob(env.data.x_train, env.data.y_train, env.generator(), own[i] if own else {})
        for i, env in enumerate(envs)
    ]
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    results = train_cohort(
        model,
        start,
        jobs,
        epochs=spec.local_epochs,
        batch_size=spec.batch_size,
        optimizer=spec.optimizer,
        prox_mu=prox_mu,
        criterion=criterion,
        chunk=chunk,
    )
    return results, min(chunk, len(envs))


@torch.no_grad()
def outputs_together(
    forward: Callable[[torch.Tensor], torch.Tensor], xs: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """``forward`` of each client's inputs ``xs``, computed over their concatenation in passes
    of :data:`EVAL_ROWS` rows; one output per client."""
    sizes = [len(x) for x in xs]
    if not sum(sizes):
        return [forward(x) for x in xs]
    rows = torch.cat(list(xs))
    out = torch.cat([forward(rows[i : i + EVAL_ROWS]) for i in range(0, len(rows), EVAL_ROWS)])
    return list(out.split(sizes))
