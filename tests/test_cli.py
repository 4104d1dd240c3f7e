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
    assert res.returncode == 2 and "either a FILE" in res.stderr
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


# ------------------------------------------------------------------ runs that fail


class _EvaluationCrash(Exception):
    pass


def _register_failing_algorithms() -> None:
    """``test_crash_eval``: the server's evaluation raises after round 1 (a bug in fedsim);
    ``test_crash_clients``: every client's training raises (the run cannot go on)."""
    from fedsim.algorithms import ALGORITHMS, Algorithm, register
    from fedsim.clients.common import ClientAlgorithm
    from fedsim.clients.fedavg import evaluate_local, train
    from fedsim.config import NoParams
    from fedsim.strategies.fedavg import FedAvg

    if "test_crash_eval" in ALGORITHMS:
        return

    class CrashingEvaluation(FedAvg):
        def server_evaluate(self, server_round, arrays):
            if server_round == 1:
                raise _EvaluationCrash("evaluation exploded")
            return super().server_evaluate(server_round, arrays)

    def failing_train(msg, context):
        raise RuntimeError("client exploded")

    crash_eval = ClientAlgorithm(train=train, evaluate=evaluate_local)
    register(Algorithm("test_crash_eval", "", NoParams, lambda sc, p: CrashingEvaluation(sc), crash_eval))
    crash_clients = ClientAlgorithm(train=failing_train, evaluate=evaluate_local)
    register(Algorithm("test_crash_clients", "", NoParams, lambda sc, p: FedAvg(sc), crash_clients))


def _main(*args: str) -> tuple[int, str, str]:
    """``fedsim ARGS`` through the console script's entry point, in this process."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from fedsim.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("debug", [False, True])
def test_a_bug_during_a_run_is_one_line_exit_1_traceback_in_the_run_folder(
    write_scenario, tmp_path: Path, debug: bool
) -> None:
    _register_failing_algorithms()
    path = write_scenario({"algorithm": {"name": "test_crash_eval"}})
    code, _out, err = _main("run", str(path), "--quiet", *(["--debug"] if debug else []))
    run = only_run(tmp_path / "runs")
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last == f"error: the run failed: _EvaluationCrash: evaluation exploded; see {run / 'error.log'}"
    assert ("Traceback" in err) == debug
    if not debug:
        assert len(err.strip().splitlines()) == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "_EvaluationCrash: evaluation exploded"
    assert summary["rounds_completed"] == 0  # round 0 was written, round 1 was not
    log = (run / "error.log").read_text()
    assert log.startswith("Traceback") and "server_evaluate" in log and "evaluation exploded" in log


def test_every_client_failing_is_a_failed_run_not_a_traceback(write_scenario, tmp_path: Path) -> None:
    _register_failing_algorithms()
    code, _out, err = _main(
        "run", str(write_scenario({"algorithm": {"name": "test_crash_clients"}})), "--quiet"
    )
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: round 1: every client failed; first error: ") and "client exploded" in err
    summary = json.loads((only_run(tmp_path / "runs") / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith("round 1: every client failed")


def test_unexpected_errors_outside_a_run_name_the_debug_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    import fedsim.loader

    def broken(*args):
        raise KeyError("boom")

    monkeypatch.setattr(fedsim.loader, "validate_file", broken)
    code, _, err = _main("validate", "x.yaml")
    assert code == 1
    assert err.strip() == "error: unexpected KeyError: 'boom' (run again with --debug for the traceback)"
    code, _, err = _main("--debug", "validate", "x.yaml")
    assert code == 1 and "Traceback" in err and "(run again" not in err


def test_a_relative_output_folder_is_made_absolute_where_the_run_is_created(
    write_scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedsim.loader import load_scenario
    from fedsim.runstore import RunFolder, new_run_dir

    monkeypatch.chdir(tmp_path)
    scenario = load_scenario(write_scenario(), ["output.dir=relative/runs"])
    path = new_run_dir(scenario)
    assert path.is_absolute() and path.parent == tmp_path / "relative" / "runs"
    assert RunFolder("relative/runs/x").path == tmp_path / "relative" / "runs" / "x"


@pytest.mark.slow
def test_a_balanced_data_set_reports_no_middle_or_tail_group(write_scenario, tmp_path: Path) -> None:
    """CIFAR-10's layout (every class the same size), 37 clients with label shards."""
    import pickle

    import numpy as np

    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    names = [f"c{i}".encode() for i in range(10)]
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    for i in range(1, 6):  # 10 classes x 74 training images, 10 x 20 test images
        labels = [c for c in range(10) for _ in range(74)][i - 1 :: 5]
        batch = {b"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8), b"labels": labels}
        (root / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    test = {
        b"data": rng.integers(0, 256, (200, 3072), dtype=np.uint8),
        b"labels": [c % 10 for c in range(200)],
    }
    (root / "test_batch").write_bytes(pickle.dumps(test))
    path = write_scenario(
        {
            "rounds": 1,
            "data": {
                "dataset": "cifar10",
                "options": {"path": str(root)},
                "partition": {"name": "shards", "shards_per_client": 2},
            },
            "clients": {"num": 37, "fraction": 0.1},
        }
    )
    res = cli("run", str(path), "--quiet", "--set", "data.partition={name: shards, shards_per_client: 2}")
    assert res.returncode == 0, res.stderr
    run = only_run(tmp_path / "runs")
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for row in metrics:  # every class is head: no middle or tail accuracy, never a 0 for them
        assert "server_accuracy_head" in row
        assert not any(k.startswith(("server_accuracy_middle", "server_accuracy_tail")) for k in row), row
    clients = [json.loads(x) for x in (run / "clients.jsonl").read_text().splitlines()]
    for row in (c for c in clients if c["phase"] == "evaluate"):
        for g in ("head", "middle", "tail"):
            assert (row[f"accuracy_{g}"] is None) == (row[f"num_examples_{g}"] == 0)
