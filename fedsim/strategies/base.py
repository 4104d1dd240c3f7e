"""What every fedsim strategy adds to a Flower strategy.

Flower's strategies sample nodes with ``random.sample`` on the global RNG and by
node id, which differs between runtimes. fedsim samples by *partition id* with a
generator derived from (seed, round, purpose), so a scenario samples the same
clients on every runtime and on resume, and aggregates replies in partition order.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedsim.config import Scenario
from fedsim.records import weighted_average

#: Purpose of a retried round's samples (plus the attempt), apart from training (0) and
#: evaluation (1).
RETRY_PURPOSE = 0x7E7
#: Train-config key of a retried round's attempt (absent in a round's first sample).
ATTEMPT_KEY = "attempt"

#: Metric keys a client reports for bookkeeping; they are not averaged.
BOOKKEEPING_KEYS = ("partition-id", "compute-s", "cpu-s", "cohort-chunk", "fault-hang-s")


@dataclass(frozen=True)
class NodeInfo:
    """What the server learns about a node when the run starts."""

    node_id: int
    partition_id: int
    num_train: int
    num_test: int


#: Suffixes of per-class-group metrics (``accuracy-tail``, ``accuracy-masked-head``...).
GROUP_SUFFIXES = ("head", "middle", "tail")


def _metric_weight_key(key: str, metrics: list[MetricRecord], default: str) -> str:
    """``accuracy-tail`` is weighted by ``num-examples-tail`` when clients report it;
    other metrics by ``default``."""
    group = key.rsplit("-", 1)[-1]
    wkey = f"num-examples-{group}"
    return wkey if group in GROUP_SUFFIXES and any(wkey in m for m in metrics) else default


def _numeric_keys(metrics: list[MetricRecord]) -> list[str]:
    """Every averaged key reported by any reply, in first-seen order (bookkeeping left out)."""
    keys = dict.fromkeys(k for m in metrics for k, v in m.items() if isinstance(v, int | float))
    return [k for k in keys if k not in BOOKKEEPING_KEYS]


def scalar(value: object) -> float:
    """One number of a metric record, checked (records may also hold lists)."""
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number in the record, got {value!r}")
    return float(value)


def _reported(metrics: list[MetricRecord], key: str) -> list[MetricRecord]:
    """The replies that carry a value for ``key`` (NaN: no value, e.g. an empty class group)."""
    return [m for m in metrics if key in m and not math.isnan(scalar(m[key]))]


def _weighted_mean(metrics: list[MetricRecord], key: str, wkey: str) -> float | None:
    pairs = [(scalar(m.get(wkey, 0)), scalar(m[key])) for m in _reported(metrics, key)]
    total = sum(w for w, _ in pairs)
    return sum(w * v for w, v in pairs) / total if total > 0 else None


def aggregate_metrics(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Weighted mean of each metric across replies; counts (``num-examples*``) summed.

    A metric is weighted by ``num-examples``, or by ``num-examples-<group>`` for a
    per-group metric ``<name>-<group>`` (so a tail-class accuracy is averaged over
    tail samples, not over clients). A metric only some replies carry is averaged over
    those. Bookkeeping keys are left out.
    """
    metrics = [next(iter(r.metric_records.values())) for r in records]
    out = MetricRecord()
    for key in _numeric_keys(metrics):
        if key.startswith(weighted_by_key):
            out[key] = int(sum(int(scalar(m.get(key, 0))) for m in metrics))
            continue
        value = _weighted_mean(metrics, key, _metric_weight_key(key, metrics, weighted_by_key))
        if value is not None:
            out[key] = value
    return out


def aggregate_evaluation(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Local evaluation over clients as the papers report it: the unweighted mean over clients.

    Each metric is the plain mean over the clients that report it (FedLoGe's authors'
    ``localtest``: every client counts once, whatever the size of its local test set); a
    per-group accuracy (``accuracy-tail``) is averaged over the clients with samples in
    that group. Each accuracy that is not per group is also given weighted by the local
    test sizes, as ``<key>-weighted``. Counts (``num-examples*``) are summed.
    """
    metrics = [next(iter(r.metric_records.values())) for r in records]
    out = MetricRecord()
    for key in _numeric_keys(metrics):
        if key.startswith(weighted_by_key):
            out[key] = int(sum(int(scalar(m.get(key, 0))) for m in metrics))
            continue
        values = [scalar(m[key]) for m in _reported(metrics, key)]
        if not values:
            continue
        out[key] = float(np.mean(values))
        if (
            key.startswith("accuracy")
            and _metric_weight_key(key, metrics, weighted_by_key) == weighted_by_key
        ):
            weighted = _weighted_mean(metrics, key, weighted_by_key)
            if weighted is not None:
                out[f"{key}-weighted"] = weighted
    return out


class FedsimStrategyMixin:
    """Deterministic sampling by partition id, ordered aggregation, checkpoint state.

    Subclasses combine it with a Flower strategy (``class X(FedsimStrategyMixin,
    flwr FedAvg)``) and may override :meth:`train_config` to add keys, as Flower's
    FedProx does with ``proximal-mu``.
    """

    #: True when clients keep state between rounds (``context.state``).
    stateful_clients: bool = False
    #: Set by the round loop when a system model runs: partitions that may be sampled in
    #: the next training round (None: all) and how many to sample (None: clients.per_round()).
    eligible: Collection[int] | None = None
    cohort_size: int | None = None
    #: Set by the round loop: 0, or the how-many-th new sample of a retried round.
    attempt: int = 0
    #: The global arrays of the round being trained (set by :meth:`configure_train`).
    global_arrays: ArrayRecord

    def setup(self, scenario: Scenario, nodes: list[NodeInfo]) -> None:
        """Called once by the round loop before the first round."""
        self.scenario = scenario
        self.nodes = sorted(nodes, key=lambda n: n.partition_id)
        self._pid_of = {n.node_id: n.partition_id for n in self.nodes}
        self.node_ids = frozenset(self._pid_of)

    # -- sampling ---------------------------------------------------------------

    def sample(
        self, server_round: int, purpose: int, count: int, eligible: Collection[int] | None = None
    ) -> list[NodeInfo]:
        """``count`` nodes drawn without replacement from (seed, round, purpose).

        With ``eligible`` (partition ids), only those nodes are candidates (still in
        partition order, so the draw depends only on the seed, the round and the set).
        """
        pool = self.nodes if eligible is None else [n for n in self.nodes if n.partition_id in eligible]
        count = min(count, len(pool))
        if count == len(pool):
            return list(pool)
        rng = np.random.default_rng([self.scenario.seed, server_round, purpose])
        picked = np.sort(rng.choice(len(pool), size=count, replace=False))
        return [pool[i] for i in picked]

    def partition_of(self, msg: Message) -> int:
        """The partition id of the node that sent ``msg``."""
        return self._pid_of[msg.metadata.src_node_id]

    def pid_of_node(self, node_id: int) -> int | None:
        """The partition id of the node ``node_id`` (None: a node the run does not know)."""
        return self._pid_of.get(node_id)

    def ordered(self, replies: Iterable[Message]) -> list[Message]:
        """Replies sorted by partition id (aggregation order fixed across runtimes)."""
        return sorted(replies, key=self.partition_of)

    # -- hooks ------------------------------------------------------------------

    def train_config(self, server_round: int) -> dict[str, Any]:
        """Extra config keys sent with every train message."""
        return {}

    def train_content(self, server_round: int, arrays: ArrayRecord, node: NodeInfo) -> RecordDict:
        """The content of the train message to ``node`` (shared across nodes by default)."""
        return self._shared_content

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample the cohort and build one train message per node."""
        count = self.cohort_size if self.cohort_size is not None else self.scenario.clients.per_round()
        # a retried round (faults.on_too_few: retry) draws a new sample, and tells the clients
        purpose = 0 if not self.attempt else RETRY_PURPOSE + self.attempt
        chosen = self.sample(server_round, purpose, count, self.eligible)
        self.global_arrays = arrays
        retry = {ATTEMPT_KEY: self.attempt} if self.attempt else {}
        cfg = ConfigRecord(
            {**dict(config), **self.train_config(server_round), "server-round": server_round, **retry}
        )
        self._shared_content = RecordDict({"arrays": arrays, "config": cfg})
        return [
            Message(
                self.train_content(server_round, arrays, n),
                dst_node_id=n.node_id,
                message_type=MessageType.TRAIN,
            )
            for n in chosen
        ]

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Client-side evaluation on local test sets, at the scenario's cadence."""
        ev = self.scenario.evaluation
        if ev.clients_every == 0 or server_round % ev.clients_every:
            return []
        candidates = [n for n in self.nodes if n.num_test > 0]
        count = max(1, int(len(candidates) * ev.client_fraction))
        if not candidates:
            return []
        rng = np.random.default_rng([self.scenario.seed, server_round, 1])
        picked = (
            candidates
            if count >= len(candidates)
            else [candidates[i] for i in np.sort(rng.choice(len(candidates), size=count, replace=False))]
        )
        cfg = ConfigRecord({**dict(config), "server-round": server_round})
        content = RecordDict({"arrays": arrays, "config": cfg})
        return [Message(content, dst_node_id=n.node_id, message_type=MessageType.EVALUATE) for n in picked]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Sample-weighted mean of the replies' arrays, in partition order.

        Replies are checked by Flower's FedAvg (one ArrayRecord, one MetricRecord with
        ``num-examples``); the mean is :func:`fedsim.records.weighted_average`, the same
        arithmetic as Flower's ``aggregate_arrayrecords`` without decoding copies.
        """
        valid, _ = self._check_and_log_replies(self.ordered(replies), is_train=True)  # type: ignore[attr-defined]  # Flower FedAvg mixed in
        if not valid:
            return None, None
        contents = [m.content for m in valid]
        key = self.weighted_by_key  # type: ignore[attr-defined]  # from Flower FedAvg, mixed in
        weights = [float(next(iter(c.metric_records.values()))[key]) for c in contents]
        arrays = self.combine([next(iter(c.array_records.values())) for c in contents], weights)
        return arrays, self.train_metrics_aggr_fn(contents, key)  # type: ignore[attr-defined]  # Flower FedAvg mixed in

    def combine(self, records: list[ArrayRecord], weights: list[float]) -> ArrayRecord:
        """The new global arrays from the accepted replies' arrays (sample-weighted mean)."""
        return weighted_average(records, weights)

    def reply_template(self) -> ArrayRecord | None:
        """Arrays whose keys, shapes and dtypes every train reply's arrays must have (None: any;
        each float array must still be finite)."""
        return None

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Flower's aggregation over replies in partition order."""
        return super().aggregate_evaluate(server_round, self.ordered(replies))  # type: ignore[misc]  # Flower FedAvg, next in the MRO

    # -- checkpoints --------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Server-side state to checkpoint beyond the global arrays."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    # -- model and server-side evaluation ------------------------------------------

    def initial_arrays(self) -> ArrayRecord:
        """The global arrays before round 1 (the scenario's model, freshly initialised)."""
        from fedsim.records import model_to_arrays
        from fedsim.workspace import new_model

        return model_to_arrays(new_model(self.scenario))

    def server_evaluate(self, server_round: int, arrays: ArrayRecord) -> dict[str, float]:
        """Evaluate the global model on the balanced global test set."""
        from fedsim.server.evaluate import central_evaluate

        return central_evaluate(self.scenario, arrays)
