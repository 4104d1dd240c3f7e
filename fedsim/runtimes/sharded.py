"""The ``inprocess`` runtime with ``runtime.workers: N`` (N > 1): clients sharded over processes.

Partition ``p`` of ``P`` lives in worker ``p * N // P`` (contiguous blocks). Each worker is a
spawned process holding an :class:`~fedsim.runtimes.inprocess.InProcessGrid` over its shard:
its clients' contexts (``context.state`` persists there across rounds, and is fetched for
checkpoints) and its own data and models, built from the scenario (nothing large is sent).

A round's messages go to each worker as one batch, pickled once per worker, so content that
several messages share (the global arrays) crosses once per worker, not once per client.
The workers run side by side; the replies come back in the order the messages were pushed,
so the server aggregates exactly what the single-process grid gives it. Every worker uses
the server process's torch thread count, so the clients' arithmetic is the same too.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from typing import Any

from flwr.app import Message, RecordDict

from fedsim.apps import load_app
from fedsim.runtimes.inprocess import NODE_ID_OFFSET, InProcessGrid, LocalGrid


def shard_of(partition_id: int, num_nodes: int, workers: int) -> int:
    """The worker that holds ``partition_id`` (contiguous blocks of partitions)."""
    return partition_id * workers // num_nodes


def _serve(
    conn: Connection, app_ref: str, num_nodes: int, run_config: dict, shard: list[int], threads: int
) -> None:
    """A worker's loop: execute batches, hand out or take back client states, until told to stop."""
    import torch

    torch.set_num_threads(threads)
    grid = InProcessGrid(load_app(app_ref), num_nodes, run_config, partitions=shard)
    while True:
        try:
            op, payload = conn.recv()
        except EOFError:  # the server went away
            return
        if op == "execute":
            conn.send([grid.execute(msg) for msg in payload])
        elif op == "states":
            conn.send(grid.client_states())
        elif op == "restore":
            grid.restore_client_states(payload)
            conn.send(None)
        else:  # "stop"
            conn.send(None)
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
    """A worker process ended while the server waited for it."""


class _Worker:
    """One worker process and the server's end of its pipe."""

    def __init__(
        self, index: int, shard: list[int], app_ref: str, num_nodes: int, run_config: dict, threads: int
    ) -> None:
        ctx = _context()
        self.index, self.shard = index, shard
        self.conn, child = ctx.Pipe()
        args = (child, app_ref, num_nodes, run_config, shard, threads)
        self.process = ctx.Process(target=_serve, args=args, daemon=True, name=f"fedsim-worker-{index}")
        self.process.start()
        child.close()

    def send(self, op: str, payload: Any = None) -> None:
        self.conn.send((op, payload))

    def receive(self) -> Any:
        try:
            return self.conn.recv()
        except EOFError:
            self.process.join(5)
            code = self.process.exitcode
            span = f"partitions {self.shard[0]}-{self.shard[-1]}" if self.shard else "no partitions"
            raise WorkerDied(f"worker {self.index} ({span}) exited with code {code}") from None


class ShardedGrid(LocalGrid):
    """Delivers messages to the ClientApp in ``workers`` processes, each holding a shard."""

    def __init__(self, app_ref: str, num_nodes: int, run_config: dict, workers: int, run_id: int = 1) -> None:
        import torch

        super().__init__(num_nodes, run_id)
        shards: list[list[int]] = [[] for _ in range(workers)]
        for pid in range(num_nodes):
            shards[shard_of(pid, num_nodes, workers)].append(pid)
        threads = torch.get_num_threads()
        self._workers = [
            _Worker(i, shard, app_ref, num_nodes, run_config, threads)
            for i, shard in enumerate(shards)
            if shard
        ]
        self._owner = {pid: w for w in self._workers for pid in w.shard}

    def deliver(self, messages: list[Message]) -> list[Message]:
        """Each worker gets its messages as one batch; all run at once; replies in push order."""
        batches: dict[int, list[int]] = {}
        for i, msg in enumerate(messages):
            batches.setdefault(self._owner[msg.metadata.dst_node_id - NODE_ID_OFFSET].index, []).append(i)
        workers = {w.index: w for w in self._workers}
        for index, positions in batches.items():
            workers[index].send("execute", [messages[i] for i in positions])
        replies: list[Message | None] = [None] * len(messages)
        for index, positions in batches.items():
            for i, reply in zip(positions, workers[index].receive(), strict=True):
                replies[i] = reply
        return [r for r in replies if r is not None]

    def client_states(self) -> dict[int, RecordDict]:
        """Every node's non-empty ``context.state``, by partition id, gathered from the workers."""
        for w in self._workers:
            w.send("states")
        states: dict[int, RecordDict] = {}
        for w in self._workers:
            states.update(w.receive())
        return dict(sorted(states.items()))

    def restore_client_states(self, states: dict[int, RecordDict]) -> None:
        """Hand each worker the saved states of its partitions."""
        for w in self._workers:
            w.send("restore", {pid: s for pid, s in states.items() if pid in set(w.shard)})
        for w in self._workers:
            w.receive()

    def close(self) -> None:
        """Stop every worker (and wait for it)."""
        for w in self._workers:
            if w.process.is_alive():
                try:
                    w.send("stop")
                    w.receive()
                except (OSError, WorkerDied):
                    pass
            w.process.join(10)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
