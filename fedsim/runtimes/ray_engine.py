"""``runtime: {name: ray, engine: fedsim}``: the sharded runtime's workers as Ray actors.

The server loop runs in this process, as on ``inprocess``; each worker is a Ray actor
holding a shard of the clients (:class:`~fedsim.runtimes.sharded.ShardHost`), placed by
Ray across the nodes of the cluster (spread, one CPU each). ``runtime.ray.address`` joins
an existing cluster; without it the run starts a private local Ray instance and stops it
at the end. One actor call per worker per round carries that worker's batch of messages;
Ray is the transport, nothing else is. Results equal the single-process ones.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

from fedsim.apps import CLIENTAPP, COHORT_HANDLER
from fedsim.runtimes.inprocess_launch import serve_here
from fedsim.runtimes.registry import LaunchRequest
from fedsim.runtimes.sharded import ShardedGrid, ShardHost, WorkerDied, WorkerSetup


@functools.cache
def _actor_class() -> Any:
    """ShardHost as a Ray actor class (made once per process)."""
    import ray

    return ray.remote(ShardHost)


class RayWorker:
    """The server's handle on one Ray actor holding a shard."""

    def __init__(self, index: int, shard: list[int], setup: WorkerSetup, num_cpus: float = 1.0) -> None:
        self.index, self.shard = index, shard
        actor = _actor_class().options(num_cpus=num_cpus, scheduling_strategy="SPREAD", max_restarts=0)
        self.actor = actor.remote(setup, shard)
        self._pending: Any = None

    def send(self, op: str, payload: Any = None) -> None:
        self._pending = self.actor.handle.remote(op, payload)

    def receive(self) -> Any:
        import ray

        try:
            return ray.get(self._pending)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError):
            raise WorkerDied(self.death()) from None

    def death(self) -> str:
        span = f"partitions {self.shard[0]}-{self.shard[-1]}"
        return f"worker {self.index} ({span}): its Ray actor died"

    def pid(self) -> int:
        import ray

        return int(ray.get(self.actor.pid.remote()))

    def close(self) -> None:
        import ray

        ray.kill(self.actor, no_restart=True)


class RayCluster:
    """Ray for one run: joined at ``address`` (``auto`` or HOST:PORT), or a private local instance."""

    def __init__(self, address: str | None) -> None:
        import ray

        self.owned = not ray.is_initialized()
        if self.owned:
            with warnings.catch_warnings():  # Ray's tip about a future default for GPU env vars
                warnings.filterwarnings("ignore", "Tip: In future versions of Ray", FutureWarning)
                self._init(address)

    @staticmethod
    def _init(address: str | None) -> None:
        import ray

        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            ignore_reinit_error=True,
        )

    def cpus(self) -> int:
        """CPUs of the whole cluster (one worker each when ``runtime.workers`` is 0)."""
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def close(self) -> None:
        import ray

        if self.owned:
            ray.shutdown()


def launch_fedsim_engine(request: LaunchRequest) -> None:
    """The server loop here; the clients in ``runtime.workers`` Ray actors (0: one per cluster CPU),
    each running ``runtime.threads`` torch threads (0: as many as the CPUs it holds)."""
    sc = request.scenario
    cluster = RayCluster(sc.runtime.ray.address)
    try:
        workers = sc.runtime.workers or cluster.cpus()
        cpus = sc.runtime.ray.num_cpus

        def start(index: int, shard: list[int], setup: WorkerSetup) -> RayWorker:
            return RayWorker(index, shard, setup, cpus)

        threads = sc.runtime.threads or max(1, int(cpus))  # the CPUs each actor holds
        grid = ShardedGrid(
            CLIENTAPP,
            sc.clients.num,
            request.run_config(),
            workers,
            threads,
            start=start,
            cohort_ref=COHORT_HANDLER,
        )
        serve_here(request, grid)
    finally:
        cluster.close()
