"""The ``inprocess`` runtime with ``runtime.workers: N`` (N > 1): clients sharded over processes.

Partition ``p`` of ``P`` lives in worker ``p * N // P`` (contiguous blocks). Each worker is a
spawned process holding an :class:`~fedsim.runtimes.inprocess.InProcessGrid` over its shard:
its clients' contexts (``context.state`` persists there across rounds, and is fetched for
checkpoints) and its own data and models, built from the scenario (nothing large is sent).

A round's messages go to each worker as one batch, pickled once per worker, so content that
several messages share (the global arrays) crosses once per worker, not once per client.
The workers run side by side; the replies come back in the order the messages were pushed,
so the server aggregates exactly what the single-process grid gives it. Each worker runs
``runtime.threads`` torch threads (by default the CPUs shared out among the workers, so that
they do not compete for cores); with the same thread count as one process (for example
``runtime.threads: 1`` for both), the clients' arithmetic, and so the results, are the same.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from typing import Any, Protocol

from flwr.app import Error, Message, RecordDict

from fedsim.apps import load_app
from fedsim.runtimes.inprocess import CLIENT_APP_RAISED_EXCEPTION, NODE_ID_OFFSET, InProcessGrid, LocalGrid

logger = logging.getLogger(__name__)


def shard_of(partition_id: int, num_nodes: int, workers: int) -> int:
    """The worker that holds ``partition_id`` (contiguous blocks of partitions)."""
    return partition_id * workers // num_nodes


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker is started with (its shard aside)."""

    app_ref: str
    num_nodes: int
    run_config: dict
    threads: int
    cohort_ref: str | None = None


class ShardHost:
    """A worker's side: its shard's clients (an InProcessGrid) answering the server's requests."""

    def __init__(self, setup: WorkerSetup, shard: list[int]) -> None:
        import torch

        torch.set_num_threads(setup.threads)
        app = load_app(setup.app_ref)
        cohort = load_app(setup.cohort_ref) if setup.cohort_ref else None
        self.grid = InProcessGrid(app, setup.num_nodes, setup.run_config, partitions=shard, cohort=cohort)

    def handle(self, op: str, payload: Any = None) -> Any:
        """``execute`` a batch of messages, hand out the clients' ``states``, or ``restore`` them."""
        if op == "execute":
            return [self.grid.execute(msg) for msg in payload]
        if op == "states":
            return self.grid.client_states()
        if op == "restore":
            self.grid.restore_client_states(payload)
        return None

    def pid(self) -> int:
        """The process holding this shard."""
        return os.getpid()


def _serve(conn: Connection, setup: WorkerSetup, shard: list[int]) -> None:
    """A worker process's loop: answer requests from the pipe until told to stop."""
    host = ShardHost(setup, shard)
    while True:
        try:
            op, payload = conn.recv()
        except EOFError:  # the server went away
            return
        conn.send(host.handle(op, payload))
        if op == "stop":
            return


def _context() -> ForkServerContext | SpawnContext:
    """Workers fork from a forkserver that has imported the ClientApp once per process (never
    from the server itself, whose torch may have started threads); where there is no
    forkserver, they are spawned."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["fedsim.clients.app"])
    return ctx


class WorkerDied(RuntimeError):
    """A worker ended while the server waited for it."""


class Worker(Protocol):
    """The server's handle on one worker: a request at a time, answered in order."""

    index: int
    shard: list[int]

    def send(self, op: str, payload: Any = None) -> None: ...
    def receive(self) -> Any: ...
    def death(self) -> str: ...
    def pid(self) -> int: ...
    def close(self) -> None: ...


#: (index, shard, setup) -> a started worker
WorkerFactory = Callable[[int, list[int], WorkerSetup], Worker]


class ProcessWorker:
    """One worker process on this machine and the server's end of its pipe."""

    def __init__(self, index: int, shard: list[int], setup: WorkerSetup) -> None:
        ctx = _context()
        self.index, self.shard = index, shard
        self.conn, child = ctx.Pipe()
        args = (child, setup, shard)
        self.process = ctx.Process(target=_serve, args=args, daemon=True, name=f"fedsim-worker-{index}")
        self.process.start()
        child.close()

    def pid(self) -> int:
        """The worker's process id."""
        return int(self.process.pid or 0)

    def send(self, op: str, payload: Any = None) -> None:
        self.conn.send((op, payload))

    def receive(self) -> Any:
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            raise WorkerDied(self.death()) from None

    def death(self) -> str:
        """What happened to the process, in one line."""
        self.process.join(5)
        span = f"partitions {self.shard[0]}-{self.shard[-1]}"
        return f"worker {self.index} ({span}) exited with code {self.process.exitcode}"

    def close(self) -> None:
        """Ask the process to stop, then make sure it has."""
        if self.process.is_alive():
            try:
                self.send("stop")
                self.receive()
            except (OSError, WorkerDied):
                pass
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class ShardedGrid(LocalGrid):
    """Delivers messages to the ClientApp in ``workers`` processes, each holding a shard."""

    def __init__(
        self,
        app_ref: str,
        num_nodes: int,
        run_config: dict,
        workers: int,
        threads: int,
        run_id: int = 1,
        start: WorkerFactory = ProcessWorker,
        cohort_ref: str | None = None,
    ) -> None:
        """``threads``: torch threads of each worker; ``start``: how a worker is started (a
        process here by default; a Ray actor); ``cohort_ref``: the workers' cohort hook
        (``module:function``, see :class:`~fedsim.runtimes.inprocess.InProcessGrid`)."""
        super().__init__(num_nodes, run_id)
        shards: list[list[int]] = [[] for _ in range(workers)]
        for pid in range(num_nodes):
            shards[shard_of(pid, num_nodes, workers)].append(pid)
        self._setup = WorkerSetup(app_ref, num_nodes, run_config, threads, cohort_ref)
        self._start = start
        self._workers = {i: start(i, shard, self._setup) for i, shard in enumerate(shards) if shard}
        self._owner = {pid: i for i, w in self._workers.items() for pid in w.shard}
        self.restarts = 0
        #: the clients' states as last checkpointed or restored: what a restarted worker gets
        self._saved: dict[int, RecordDict] = {}

    def deliver(self, messages: list[Message]) -> list[Message]:
        """Each worker gets its messages as one batch; all run at once; replies in push order.

        A worker that has died fails its messages of this batch (error replies, as for a
        client that raised) and is started again with its shard; the others are unaffected."""
        batches: dict[int, list[int]] = {}
        for i, msg in enumerate(messages):
            batches.setdefault(self._owner[msg.metadata.dst_node_id - NODE_ID_OFFSET], []).append(i)
        died: dict[int, str] = {}
        for index, positions in batches.items():
            try:
                self._workers[index].send("execute", [messages[i] for i in positions])
            except OSError:  # its end of the pipe is gone
                died[index] = self._workers[index].death()
        replies: list[Message] = list(messages)  # every slot is replaced below
        answered = 0
        for index, positions in batches.items():
            try:
                got = [] if index in died else self._workers[index].receive()
            except WorkerDied as exc:
                died[index] = str(exc)
            if index in died:
                got = [_lost(messages[i], died[index]) for i in positions]
            for i, reply in zip(positions, got, strict=True):
                replies[i] = reply
            answered += len(positions)
            if self.on_progress:
                self.on_progress(answered, len(messages))
        for index, why in died.items():
            self._restart(index, why)
        return replies

    def _restart(self, index: int, why: str) -> None:
        """A fresh worker for the shard of a dead one; its clients get back the states of the
        last checkpoint (what they learnt since then is lost with the process)."""
        old = self._workers[index]
        old.close()
        worker = self._workers[index] = self._start(index, old.shard, self._setup)
        saved = {pid: self._saved[pid] for pid in old.shard if pid in self._saved}
        if saved:
            worker.send("restore", saved)
            worker.receive()
        self.restarts += 1
        logger.warning("%s; started again with %d client states from the last checkpoint", why, len(saved))

    @property
    def num_workers(self) -> int:
        """How many workers hold the shards."""
        return len(self._workers)

    def client_states(self) -> dict[int, RecordDict]:
        """Every node's non-empty ``context.state``, by partition id, gathered from the workers."""
        for w in self._workers.values():
            w.send("states")
        states: dict[int, RecordDict] = {}
        for w in self._workers.values():
            states.update(w.receive())
        self._saved = dict(sorted(states.items()))
        return self._saved

    def restore_client_states(self, states: dict[int, RecordDict]) -> None:
        """Hand each worker the saved states of its partitions."""
        self._saved = dict(states)
        for w in self._workers.values():
            shard = set(w.shard)
            w.send("restore", {pid: s for pid, s in states.items() if pid in shard})
        for w in self._workers.values():
            w.receive()

    def worker_pids(self) -> dict[int, int]:
        """Worker index -> its process id."""
        return {i: w.pid() for i, w in self._workers.items()}

    def close(self) -> None:
        """Stop every worker (and wait for it)."""
        for w in self._workers.values():
            w.close()


def _lost(msg: Message, why: str) -> Message:
    """The error reply to a message whose worker died before answering."""
    return Message(Error(code=CLIENT_APP_RAISED_EXCEPTION, reason=f"{why}; reply lost"), reply_to=msg)
