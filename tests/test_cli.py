"""The command line as a user runs it: files written, errors, listing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli, only_run


@pytest.mark.slow
def test_run_writes_run_folder_and_beats_chance(write_scenario, tmp_path: Path) -> None:
    path = write_scenario({"rounds": 4})
    res = cli("run", str(path), "--quiet")
    assert res.returncode == 0, res.stderr
    run = only_run(tmp_path / "runs")
    assert str(run.name) in res.stdout.replace("\n", "")
    assert {"scenario.yaml", "metrics.jsonl", "clients.jsonl", "summary.json", "checkpoints"} <= {
        p.name for p in run.iterdir()
    }
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [0, 1, 2, 3, 4]
    assert metrics[-1]["server_accuracy"] > 0.3  # 10 classes: chance is 0.1
    assert all(m["clients_sampled"] == 3 for m in metrics[1:])
    clients = [json.loads(x) for x in (run / "clients.jsonl").read_text().splitlines()]
    train = [c for c in clients if c["phase"] == "train"]
    assert len(train) == 4 * 3
    for row in train:
        assert row["num_examples"] > 0 and row["bytes_down"] > 0 and row["bytes_up"] > 0
        assert row["compute_s"] > 0 and 0 <= row["accuracy"] <= 1 and 0 <= row["partition_id"] < 6
    assert {c["phase"] for c in clients} == {"train", "evaluate"}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 4
    assert summary["final_server_accuracy"] == metrics[-1]["server_accuracy"]
    assert len(list((run / "checkpoints").glob("round-*.pt"))) == 4


def test_validate_ok_and_set(write_scenario) -> None:
    res = cli("validate", str(write_scenario()), "--set", "clients.num=5")
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout and "5 clients" in res.stdout


@pytest.mark.parametrize(
    ("extra", "sets", "expected"),
    [
        ({"clients": {"fraction": 1.5}}, [], "clients.fraction"),
        ({"trian": {}}, [], "trian: unknown key"),
        ({}, ["clients.num=5000"], "clients.num is 5000"),
        ({}, ["data.partition.alpha=-1"], "data.partition.alpha"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(
    write_scenario, tmp_path: Path, extra, sets, expected
) -> None:
    path = write_scenario(extra)
    args = ["run", str(path), "--quiet"] + [a for s in sets for a in ("--set", s)]
    res = cli(*args)
    assert res.returncode == 2
    assert expected in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    res = cli("run", "--quiet")
    assert res.returncode == 2 and "either a SCENARIO" in res.stderr
    res = cli("run", "--resume", str(tmp_path / "nothing"))
    assert res.returncode == 2 and "no such run folder" in res.stderr
    res = cli("list", "widgets")
    assert res.returncode == 2


@pytest.mark.parametrize(
    ("what", "names"),
    [
        ("algorithms", ["fedavg", "fedprox"]),
        ("datasets", ["digits", "shapes", "cifar10", "cifar100", "imagefolder"]),
        ("models", ["cnn", "mlp", "resnet"]),
        ("partitions", ["iid", "dirichlet", "shards"]),
        ("runtimes", ["inprocess", "ray"]),
    ],
)
def test_list(what: str, names: list[str]) -> None:
    res = cli("list", what)
    assert res.returncode == 0, res.stderr
    for name in names:
        assert name in res.stdout
