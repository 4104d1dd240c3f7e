"""Cost grows with the cohort: nodes never sampled cost nothing, clients read only their rows."""

from __future__ import annotations

import pytest
from rich.console import Console

from fedsim.data import Images
from fedsim.errors import UserError
from fedsim.loader import load_scenario
from fedsim.runner import start_run
from fedsim.runtimes.inprocess import InProcessGrid

LARGE_POPULATION = {
    "data": {
        "dataset": "shapes",
        "options": {"image_size": 16, "num_train": 3000, "num_test": 60},
    },
    "clients": {"num": 1000, "fraction": 0.004, "min": 1},
    "rounds": 2,
    "evaluation": {"server_every": 0, "clients_every": 0},
}


def test_unsampled_nodes_cost_nothing_and_no_client_reads_the_whole_split(
    write_scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    def whole_split(self: Images) -> None:
        raise AssertionError("a client run read every image of a split")

    monkeypatch.setattr(Images, "all", property(whole_split))
    made: list[int] = []
    context = InProcessGrid._context

    def counted(self: InProcessGrid, node: int):  # type: ignore[no-untyped-def]
        if node not in self._contexts:
            made.append(node)
        return context(self, node)

    monkeypatch.setattr(InProcessGrid, "_context", counted)
    path = write_scenario(LARGE_POPULATION)
    iid = ["data.partition={name: iid}"]  # replaces the base scenario's Dirichlet partition
    folder, summary = start_run(path, iid, None, False, False, Console(quiet=True))
    assert summary["status"] == "completed"
    rows = [r for r in folder.read("clients.jsonl") if r["phase"] == "train"]
    assert rows and all("error" not in r and r["num_examples"] == 3 for r in rows)
    trained = {r["partition_id"] for r in rows}
    assert len(trained) <= 8 and len(made) == len(trained)  # a context per sampled node, no more


def test_threads_belong_to_fedsims_own_processes(write_scenario) -> None:
    with pytest.raises(
        UserError, match=r"runtime: threads 2 needs name: inprocess, or ray with engine: fedsim"
    ):
        load_scenario(write_scenario({"runtime": {"name": "ray", "threads": 2}}))
    assert load_scenario(write_scenario({"runtime": {"workers": 2, "threads": 1}})).runtime.threads == 1
