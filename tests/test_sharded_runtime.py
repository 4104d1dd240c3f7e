"""``runtime.workers``: clients sharded over worker processes give the results of one process."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from rich.console import Console

from fedsim.loader import load_scenario
from fedsim.runner import resume_run, start_run
from fedsim.runtimes.sharded import ShardedGrid, shard_of
from fedsim.server.rounds import PHASES
from tests.helpers import rows
from tests.test_system_rounds import HETERO, mlp_scenario

QUIET = Console(quiet=True)

FEDLOGE: dict[str, Any] = {
    "algorithm": {"name": "fedloge", "ssec_steps": 200},
    "data": {"long_tail": {"imbalance_factor": 5}},
    "clients": {"num": 5, "fraction": 1.0},
    "rounds": 2,
}


def run(path: Path, workers: int, stop_after: int | None = None) -> Path:
    # one torch thread in every process that runs clients: the same arithmetic for any N
    sets = [f"runtime.workers={workers}", "runtime.threads=1"]
    folder, summary = start_run(path, sets, stop_after, False, False, QUIET)
    assert summary["workers"] == workers
    wall = summary["round_wall_s"]  # mean wall seconds per round, by phase
    assert set(wall) == {"rounds", *PHASES} and wall["rounds"] >= 1 and wall["clients"] > 0
    return folder.path


def outputs(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return rows(run_dir / "metrics.jsonl"), rows(run_dir / "clients.jsonl")


def test_shards_are_contiguous_blocks_covering_every_partition() -> None:
    for num, workers in [(5, 2), (7, 3), (2, 3), (100, 8)]:
        owners = [shard_of(p, num, workers) for p in range(num)]
        assert owners == sorted(owners) and set(owners) <= set(range(workers))
        assert max(owners.count(w) for w in set(owners)) - min(owners.count(w) for w in set(owners)) <= 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["fedavg", "fedloge", "system"], ids=["fedavg", "fedloge-stateful", "system-virtual-clock"]
)
def test_any_number_of_workers_gives_the_single_process_results(write_scenario, name: str) -> None:
    if name == "system":
        path = mlp_scenario(write_scenario, HETERO)
    else:
        path = write_scenario(FEDLOGE if name == "fedloge" else {"rounds": 2})
    one = outputs(run(path, 1))
    assert one[0] and one[1]
    assert outputs(run(path, 2)) == one
    # 3 workers, stopped after round 1 and resumed: the clients' states (FedLoGe's local heads)
    # are checkpointed from the workers and handed back to new ones
    part = run(path, 3, stop_after=1)
    resume_run(part, None, None, False, False, QUIET)
    assert outputs(part) == one
    assert not multiprocessing.active_children()  # every worker stopped with its run
    # the same workers as Ray actors: tests/test_ray_cluster.py (a two-node cluster)


def test_workers_belong_to_the_inprocess_runtime(write_scenario) -> None:
    from fedsim.errors import UserError

    path = write_scenario({"runtime": {"name": "ray", "workers": 2}})
    with pytest.raises(
        UserError, match=r"runtime: workers 2 needs name: inprocess, or ray with engine: fedsim"
    ):
        load_scenario(path)
    with pytest.raises(
        UserError, match=r"runtime: engine fedsim is a choice of the ray runtime, not of inprocess"
    ):
        load_scenario(write_scenario({"runtime": {"engine": "fedsim"}}))
    fedsim_ray = load_scenario(write_scenario({"runtime": {"name": "ray", "engine": "fedsim", "workers": 0}}))
    assert fedsim_ray.runtime.workers == 0
    assert load_scenario(write_scenario({"runtime": {"workers": 4}})).runtime.workers == 4


#: A ClientApp counting its calls in ``context.state`` (imported by reference in the workers).
COUNTER = ClientApp()


@COUNTER.train()
def _count(msg: Message, context: Context) -> Message:
    count = int(context.state.config_records.get("s", ConfigRecord({"n": 0}))["n"]) + 1
    context.state["s"] = ConfigRecord({"n": count})
    pid = int(context.node_config["partition-id"])
    return Message(RecordDict({"m": MetricRecord({"pid": pid, "n": count, "os": os.getpid()})}), reply_to=msg)


@pytest.mark.slow
def test_a_dead_worker_fails_only_its_clients_and_is_started_again() -> None:
    grid = ShardedGrid("tests.test_sharded_runtime:COUNTER", 6, {}, 3, threads=1)
    try:
        nodes = list(grid.get_node_ids())

        def round_() -> list[Message]:
            content = RecordDict({"config": ConfigRecord({})})
            msgs = [Message(content, dst_node_id=n, message_type=MessageType.TRAIN) for n in nodes]
            return list(grid.send_and_receive(msgs))

        seen: list[tuple[int, int]] = []
        grid.on_progress = lambda done, total: seen.append((done, total))
        first = round_()
        assert [int(r.content["m"]["pid"]) for r in first] == list(range(6))  # push order
        assert [t for _, t in seen] == [6, 6, 6] and [d for d, _ in seen] == [2, 4, 6]  # per worker
        assert len({int(r.content["m"]["os"]) for r in first}) == 3  # three processes
        assert set(grid.client_states()) == set(range(6))
        os.kill(grid.worker_pids()[1], signal.SIGKILL)  # holds partitions 2 and 3
        second = round_()
        assert [r.has_error() for r in second] == [False, False, True, True, False, False]
        assert "worker 1 (partitions 2-3) exited with code -9; reply lost" in second[2].error.reason
        assert [int(r.content["m"]["n"]) for i, r in enumerate(second) if i not in (2, 3)] == [2] * 4
        third = round_()  # the restarted worker answers; its clients resume from the states
        # last checkpointed (after round 1): what round 2 would have added died with the process
        assert [int(r.content["m"]["n"]) for r in third] == [3, 3, 2, 2, 3, 3]
        assert grid.restarts == 1
    finally:
        grid.close()
    assert not multiprocessing.active_children()
