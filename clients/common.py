"""What every client handler needs: its scenario, its data, a reusable model, timing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from torch import nn

from fedsim.config import Scenario
from fedsim.data.export import node_partition
from fedsim.devices import placed
from fedsim.devices import resolve as resolve_device
from fedsim.models import SplitModel
from fedsim.records import load_arrays, model_to_arrays
from fedsim.training import LossFn, Stats, cross_entropy, derive_seed, make_optimizer, train_epochs
from fedsim.workspace import ClientData, scenario_of, worker_model

#: A client's answer to one message of the server.
Handler = Callable[[Message, Context], Message]
#: The answers to several train messages of one round, in their order (one per message).
CohortHandler = Callable[[list[Message], list[Context]], list[Message]]


@dataclass(frozen=True)
class ClientAlgorithm:
    """The client half of an algorithm: what it does on a train and an evaluate message,
    and, where the algorithm allows it, on several train or evaluate messages at once (a
    cohort: see ``train.vectorise``)."""

    train: Handler
    evaluate: Handler
    train_cohort: CohortHandler | None = None
    evaluate_cohort: CohortHandler | None = None


@dataclass
class ClientEnv:
    """A client's view of the run for one message."""

    scenario: Scenario
    partition_id: int
    data: ClientData
    server_round: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """Where this call's arithmetic runs (``train.device``)."""
        return resolve_device(self.scenario.train.device)

    def local_epochs(
        self,
        model: nn.Module,
        data: tuple[torch.Tensor, torch.Tensor] | None = None,
        params: Iterable[nn.Parameter] | None = None,
        loss_fn: LossFn = cross_entropy,
    ) -> Stats:
        """The scenario's local epochs of ``model`` on ``data`` (default: the client's training set),
        on ``train.device``, with its optimiser over ``params`` (default: all of the model's)."""
        spec = self.scenario.train
        x, y = data if data is not None else (self.data.x_train, self.data.y_train)
        with placed(self.device, model):
            return train_epochs(
                model,
                x,
                y,
                epochs=spec.local_epochs,
                batch_size=spec.batch_size,
                optimizer=make_optimizer(model.parameters() if params is None else params, spec.optimizer),
                generator=self.generator(),
                loss_fn=loss_fn,
            )

    def generator(self, purpose: int = 0) -> torch.Generator:
        """A generator fixed by (seed, round, client, purpose)."""
        g = torch.Generator()
        g.manual_seed(derive_seed(self.scenario.seed, self.server_round, self.partition_id, purpose))
        return g

    def model(self, arrays: ArrayRecord | None = None, slot: str = "client") -> SplitModel:
        """This process's reusable model, loaded in place with ``arrays``."""
        model = worker_model(self.scenario, slot)
        if arrays is not None:
            load_arrays(model, arrays)
        return model

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Measure wall and CPU seconds of the enclosed work (reported to the server)."""
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.timings["compute-s"] = self.timings.get("compute-s", 0.0) + time.perf_counter() - wall
        self.timings["cpu-s"] = self.timings.get("cpu-s", 0.0) + time.process_time() - cpu


def scalar(value: object) -> float:
    """One number of a record, checked (records may also hold lists, strings, bytes)."""
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number in the record, got {value!r}")
    return float(value)


def number(value: object) -> int:
    """A whole number of a record (a count, a round), checked."""
    return int(scalar(value))


def client_env(msg: Message, context: Context) -> ClientEnv:
    """Build the env of one call from the run config and the node config.

    A real SuperNode names its partition file (``partition-file`` in its node config,
    see :mod:`fedsim.data.export`); in simulation the node config gives ``partition-id``.
    """
    scenario = scenario_of(str(context.run_config["scenario"]))
    pid, data = node_partition(context.node_config, scenario)
    config = msg.content.config_records.get("config")
    server_round = number(config["server-round"]) if config and "server-round" in config else 0
    return ClientEnv(scenario, pid, data, server_round)


def reply(
    msg: Message, env: ClientEnv, stats: Stats, arrays: ArrayRecord | None = None, /, **extra: float
) -> Message:
    """The standard reply: optional arrays and one MetricRecord with ``num-examples``."""
    metrics = MetricRecord(
        {
            "num-examples": stats.num_examples,
            "loss": stats.loss,
            "accuracy": stats.accuracy,
            "partition-id": env.partition_id,
            **env.timings,
            **extra,
        }
    )
    content = RecordDict({"metrics": metrics})
    if arrays is not None:
        content["arrays"] = arrays
    return Message(content, reply_to=msg)


def arrays_of(model: nn.Module) -> ArrayRecord:
    """The model's weights to send back."""
    return model_to_arrays(model)


def persistent_linear(
    context: Context, key: str, age_key: str, dim: int, num_classes: int, seed: int, pid: int, salt: int
) -> tuple[nn.Linear, int]:
    """A client's own linear head from ``context.state[key]`` and its age in rounds (``age_key``).

    Absent (the client's first round): a fresh head, initialised like ``nn.Linear`` but from a
    generator seeded by (run seed, partition id, ``salt``), so it is the same in every runtime.
    """
    head = nn.Linear(dim, num_classes)
    if key in context.state.array_records:
        load_arrays(head, context.state.array_records[key])
        return head, number(context.state.config_records[age_key]["rounds"])
    gen = torch.Generator().manual_seed(derive_seed(seed, pid, salt))
    with torch.no_grad():
        bound = 1.0 / dim**0.5
        head.weight.uniform_(-bound, bound, generator=gen)
        head.bias.uniform_(-bound, bound, generator=gen)
    return head, 0
