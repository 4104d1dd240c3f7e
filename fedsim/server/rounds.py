"""The round loop: the strategy's hooks, around it the run folder and callbacks.

Flower's ``Strategy.start()`` always begins at round 1 and has no per-round hook
besides ``evaluate_fn``; fedsim needs to resume from a checkpoint and to write
per-client rows, so it runs the same hooks in the same order itself:
``configure_train -> send_and_receive -> aggregate_train -> configure_evaluate ->
send_and_receive -> aggregate_evaluate -> server-side evaluation``.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedsim.config import Scenario
from fedsim.errors import RunFailed
from fedsim.faults import faults_of
from fedsim.server.screening import client_rows, past_deadline
from fedsim.strategies.base import FedsimStrategyMixin, NodeInfo
from fedsim.system.clock import SystemModel
from fedsim.workspace import federated_data

#: How long to wait for every node to answer the discovery query (real devices join late).
DISCOVERY_TIMEOUT_S = 600.0


@dataclass
class RoundResult:
    """What one round produced: a metrics row and per-client rows."""

    round: int
    metrics: dict[str, Any]
    clients: list[dict[str, Any]] = field(default_factory=list)


class Callback(Protocol):
    """Cross-cutting work at round boundaries (writing files, checkpoints, progress)."""

    def on_round_end(self, result: RoundResult, loop: RoundLoop) -> None:
        """Called after each round (and after round 0, the initial evaluation)."""


class SupportsClientState(Protocol):
    """A grid that can read and restore every node's ``context.state``."""

    def client_states(self) -> dict[int, RecordDict]: ...

    def restore_client_states(self, states: dict[int, RecordDict]) -> None: ...


def discover(
    grid: Grid,
    scenario: Scenario,
    timeout: float = DISCOVERY_TIMEOUT_S,
    waiting: Callable[[int, int], None] | None = None,
) -> list[NodeInfo]:
    """Every node's partition id and data sizes: read from the scenario's partition map when
    the grid's nodes are its partitions (fedsim's own grids), else asked of every node
    (waiting up to ``timeout`` s for all to connect; ``waiting(connected, needed)`` is told
    each new count)."""
    layout = getattr(grid, "partition_nodes", None)
    if layout is not None:  # no client is built or called: start-up grows with the map only
        fed = federated_data(scenario)
        return [
            NodeInfo(node, pid, len(fed.train_indices[pid]), len(fed.test_indices[pid]))
            for pid, node in sorted(layout().items())
        ]
    deadline, told = time.monotonic() + timeout, -1
    needed = scenario.clients.num
    while len(node_ids := list(grid.get_node_ids())) < needed:
        if waiting is not None and len(node_ids) != told:
            told = len(node_ids)
            waiting(told, needed)
        if time.monotonic() > deadline:
            raise RunFailed(
                f"only {len(node_ids)} of the {needed} nodes the scenario needs (clients.num) connected "
                f"within {timeout:g} s; {needed - len(node_ids)} missing: check that each SuperNode runs "
                "and points at this SuperLink (--superlink; its own log says why it stopped), or raise "
                "runtime.deployment.wait_s"
            )
        time.sleep(0.5)
    if waiting is not None and told >= 0:  # it did wait: say the wait is over
        waiting(len(node_ids), needed)
    content = RecordDict({"config": ConfigRecord({"server-round": 0})})
    msgs = [Message(content, dst_node_id=n, message_type=MessageType.QUERY) for n in node_ids]
    nodes = []
    for reply in grid.send_and_receive(msgs, timeout=timeout):
        if reply.has_error():
            raise RunFailed(
                f"node {reply.metadata.src_node_id} failed to describe itself: {reply.error.reason}"
            )
        info = reply.content["info"]
        nodes.append(
            NodeInfo(
                reply.metadata.src_node_id,
                int(cast(int, info["partition-id"])),
                int(cast(int, info["num-train"])),
                int(cast(int, info["num-test"])),
            )
        )
    return sorted(nodes, key=lambda n: n.partition_id)


def _prefixed(prefix: str, metrics: Any) -> dict[str, Any]:
    """Aggregated client metrics as metrics.jsonl columns: ``accuracy-tail`` ->
    ``{prefix}_accuracy_tail``; sample counts are left out."""
    return {
        f"{prefix}_{k.replace('-', '_')}": v
        for k, v in (metrics or {}).items()
        if not k.startswith("num-examples")
    }


#: The phases of a round whose wall time summary.json reports: building the messages,
#: waiting for the clients' replies (client compute, and transport on real runtimes),
#: turning replies into rows and aggregating them, and the server-side evaluation.
PHASES = ("dispatch", "clients", "aggregation", "server_evaluation")


@contextlib.contextmanager
def _timed(wall: dict[str, float], phase: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        wall[phase] += time.perf_counter() - t0


class RoundLoop:
    """Runs rounds ``start+1 .. scenario.rounds`` of a strategy on a grid."""

    def __init__(
        self,
        scenario: Scenario,
        strategy: FedsimStrategyMixin,
        grid: Grid,
        arrays: ArrayRecord,
        callbacks: Sequence[Callback],
        start_round: int = 0,
        elapsed_s: float = 0.0,
        system: SystemModel | None = None,
    ) -> None:
        self.scenario = scenario
        self.strategy = strategy
        self.grid = grid
        self.arrays = arrays
        self.callbacks = list(callbacks)
        self.round = start_round
        self._elapsed_before = elapsed_s
        self._t0 = time.perf_counter()
        self.system = system
        #: per round run in this process: wall seconds of each phase (see :data:`PHASES`)
        self.wall: list[dict[str, float]] = []

    def wall_summary(self) -> dict[str, Any]:
        """Mean wall seconds per round of each phase, over the rounds run in this process."""
        n = len(self.wall)
        means = {k: round(sum(w[k] for w in self.wall) / n, 6) for k in PHASES} if n else {}
        return {"rounds": n, **means}

    @property
    def elapsed_s(self) -> float:
        """Wall-clock seconds of the run so far (including before a resume)."""
        return self._elapsed_before + time.perf_counter() - self._t0

    def _emit(self, result: RoundResult) -> None:
        for cb in self.callbacks:
            cb.on_round_end(result, self)

    def initial_evaluation(self) -> None:
        """Round 0: the server-side evaluation of the initial model."""
        metrics: dict[str, Any] = {"round": 0, "elapsed_s": 0.0}
        if self.system is not None:
            metrics.update(self.system.metrics())
        if self.scenario.evaluation.server_every:
            metrics.update(self.strategy.server_evaluate(0, self.arrays))
        self._emit(RoundResult(0, metrics))

    def run_round(self, server_round: int) -> RoundResult:
        """One round: train, aggregate, evaluate (clients, then server)."""
        wall = dict.fromkeys(PHASES, 0.0)
        self.wall.append(wall)
        timed = functools.partial(_timed, wall)
        strategy, grid, system = self.strategy, self.grid, self.system
        if system is not None:
            strategy.eligible, strategy.cohort_size = system.start_round(self.scenario.clients.per_round())
        train_msgs, rows, ok, skipped = self._train_replies(server_round, timed)
        with timed("aggregation"):
            arrays, train_metrics = strategy.aggregate_train(server_round, ok) if ok else (None, None)
        if arrays is not None:
            self.arrays = arrays
        metrics: dict[str, Any] = {
            "round": server_round,
            "clients_sampled": len(train_msgs),
            "clients_ok": len(ok),
            "clients_rejected": sum("rejected" in r for r in rows),
            "skipped": skipped,
            "retries": strategy.attempt,
            "bytes_down": sum(r["bytes_down"] for r in rows),
            "bytes_up": sum(r.get("bytes_up", 0) for r in rows),
        }
        metrics.update(_prefixed("train", train_metrics))
        if system is not None:
            metrics.update(system.metrics())

        with timed("dispatch"):
            eval_msgs = list(strategy.configure_evaluate(server_round, self.arrays, ConfigRecord(), grid))
        if eval_msgs:
            with timed("clients"):
                eval_replies = list(grid.send_and_receive(eval_msgs))
            with timed("aggregation"):
                eval_rows, eval_ok = client_rows(server_round, "evaluate", eval_msgs, eval_replies, strategy)
                agg: dict[str, Any] = dict(strategy.aggregate_evaluate(server_round, eval_ok) or {})
            rows += eval_rows
            metrics.update(_prefixed("clients", agg))
            metrics["bytes_down"] += sum(r["bytes_down"] for r in eval_rows)
            metrics["bytes_up"] += sum(r.get("bytes_up", 0) for r in eval_rows)

        every = self.scenario.evaluation.server_every
        if every and (server_round % every == 0 or server_round == self.scenario.rounds):
            with timed("server_evaluation"):
                metrics.update(strategy.server_evaluate(server_round, self.arrays))
        metrics["elapsed_s"] = self.elapsed_s
        strategy.attempt = 0
        return RoundResult(server_round, metrics, rows)

    def _train_replies(
        self, server_round: int, timed: Callable[[str], contextlib.AbstractContextManager[None]]
    ) -> tuple[list[Message], list[dict[str, Any]], list[Message], bool]:
        """Send the round's train messages and screen the replies; with fewer than clients.min
        accepted, do what ``faults.on_too_few`` says. The messages sent (the last sample), the
        rows of every sample, the accepted replies, and whether the round is skipped."""
        strategy, grid, system, faults = self.strategy, self.grid, self.system, self.scenario.faults
        rows: list[dict[str, Any]] = []
        while True:
            with timed("dispatch"):
                train_msgs = list(strategy.configure_train(server_round, self.arrays, ConfigRecord(), grid))
            deadline = self.scenario.runtime.round_deadline_s
            timeout = deadline if self.scenario.runtime.exchanges_messages() else None
            with timed("clients"):
                replies = list(grid.send_and_receive(train_msgs, timeout=timeout))
            with timed("aggregation"):
                got, ok = client_rows(
                    server_round, "train", train_msgs, replies, strategy, strategy.reply_template()
                )
                if deadline is not None:
                    got, ok = past_deadline(server_round, train_msgs, got, ok, strategy, deadline)
            self._note_faults(server_round, got)
            rows += got
            if train_msgs and got and all("error" in r for r in got) and not faults.injected():
                raise RunFailed(
                    f"round {server_round}: every client failed; first error: {got[0].get('error')}"
                )
            if system is not None:  # dropped and late updates are discarded before aggregation
                kept = system.settle(server_round, got)
                ok = [r for r in ok if strategy.partition_of(r) in kept]
            need = min(self.scenario.clients.min, len(train_msgs))
            if len(ok) >= need:
                return train_msgs, rows, ok, not ok
            problems = [
                str(r.get("error") or r.get("rejected")) for r in got if "error" in r or "rejected" in r
            ]
            first = problems[0].splitlines()[0] if problems else None
            too_few = (
                f"round {server_round}: {len(ok)} of {len(train_msgs)} replies accepted, fewer than "
                f"clients.min={self.scenario.clients.min}"
            )
            if faults.on_too_few == "fail":
                raise RunFailed(f"{too_few} (faults.on_too_few: fail); first problem: {first}")
            if faults.on_too_few == "retry" and strategy.attempt < faults.retries:
                strategy.attempt += 1
                continue
            return train_msgs, rows, [], True

    def _note_faults(self, server_round: int, rows: list[dict[str, Any]]) -> None:
        """Each train row's injected faults (``fault``: their names joined by ``+``), if any."""
        if not self.scenario.faults.injected():
            return
        for row in rows:
            if row.get("partition_id") is not None:
                names = faults_of(
                    self.scenario, server_round, int(row["partition_id"]), self.strategy.attempt
                )
                row["fault"] = "+".join(names) or None
                if self.strategy.attempt:
                    row["attempt"] = self.strategy.attempt

    def run(self, stop_after: int | None = None) -> None:
        """Run the remaining rounds (or up to ``stop_after``)."""
        last = self.scenario.rounds if stop_after is None else min(stop_after, self.scenario.rounds)
        for server_round in range(self.round + 1, last + 1):
            result = self.run_round(server_round)
            self.round = server_round
            self._emit(result)
