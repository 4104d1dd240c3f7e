"""Partition files for devices: ``fedsim data export`` and the ClientApp reading them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from fedsim.data.export import PartitionFileError, export_partitions, fingerprint, node_partition
from fedsim.loader import load_scenario
from fedsim.workspace import client_data
from tests.helpers import cli


@pytest.fixture
def scenario(write_scenario):
    return load_scenario(write_scenario({"clients": {"num": 3}}))


def test_export_writes_each_clients_train_and_local_test_set(tmp_path: Path, scenario) -> None:
    paths = export_partitions(scenario, tmp_path / "parts")
    assert [p.name for p in paths] == ["client-0.npz", "client-1.npz", "client-2.npz"]
    seen = []
    for pid, path in enumerate(paths):
        ref = client_data(scenario, pid)
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            for name in ("x_train", "y_train", "x_test", "y_test"):
                np.testing.assert_array_equal(npz[name], getattr(ref, name).numpy())
            seen.append(npz["y_train"].size)
        assert meta["partition_id"] == pid and meta["num_partitions"] == 3
        assert meta["fingerprint"] == fingerprint(scenario) and meta["scenario"] == "tiny"
        assert meta["input_shape"] == list(ref.x_train.shape[1:]) and meta["num_classes"] == 10
    assert sum(seen) == 1797 - 360  # digits: every training sample goes to exactly one client


def test_fingerprint_follows_the_data_not_the_training(write_scenario) -> None:
    base = fingerprint(load_scenario(write_scenario()))
    same = ["rounds=9", "model.feature_dim=64", "algorithm.name=fedprox", "runtime.name=deployment"]
    for override in same:
        assert fingerprint(load_scenario(write_scenario(), [override])) == base, override
    for override in ["seed=4", "clients.num=7", "data.partition.alpha=0.1", "data.local_test=false"]:
        assert fingerprint(load_scenario(write_scenario(), [override])) != base, override


def test_node_partition_reads_the_file_and_checks_its_scenario(
    tmp_path: Path, scenario, write_scenario
) -> None:
    path = export_partitions(scenario, tmp_path)[2]
    pid, data = node_partition({"partition-file": str(path)}, scenario)
    assert pid == 2
    assert torch.equal(data.y_train, client_data(scenario, 2).y_train)
    assert node_partition({"partition-id": 1}, scenario)[0] == 1  # simulation

    other = load_scenario(write_scenario({"clients": {"num": 3}}), ["seed=11"])
    with pytest.raises(PartitionFileError, match=r"belongs to scenario 'tiny' \(data fingerprint") as err:
        node_partition({"partition-file": str(path)}, other)
    assert "fedsim data export" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(PartitionFileError, match="not found on this SuperNode"):
        node_partition({"partition-file": str(tmp_path / "client-9.npz")}, scenario)
    with pytest.raises(PartitionFileError, match='--node-config "partition-file='):
        node_partition({}, scenario)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(PartitionFileError, match="not a fedsim partition file"):
        node_partition({"partition-file": str(junk)}, scenario)


def _context(scenario, node_config: dict) -> Context:
    run_config = {"scenario": scenario.to_json(), "run-dir": "", "resume": False, "stop-after": 0}
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config=run_config)


def test_client_app_trains_on_its_partition_file(tmp_path: Path, scenario, server_identity) -> None:
    from fedsim.clients.app import app
    from fedsim.records import model_to_arrays
    from fedsim.workspace import new_model

    path = export_partitions(scenario, tmp_path)[1]
    ctx = _context(scenario, {"partition-file": str(path)})
    query = Message(
        RecordDict({"config": ConfigRecord({"server-round": 0})}),
        dst_node_id=7,
        message_type=MessageType.QUERY,
    )
    info = app(query, ctx).content["info"]
    n_train = len(client_data(scenario, 1).y_train)
    assert (info["partition-id"], info["num-train"]) == (1, n_train)

    content = RecordDict(
        {"arrays": model_to_arrays(new_model(scenario)), "config": ConfigRecord({"server-round": 1})}
    )
    reply = app(Message(content, dst_node_id=7, message_type=MessageType.TRAIN), ctx)
    assert not reply.has_error()
    metrics = reply.content["metrics"]
    assert metrics["partition-id"] == 1 and metrics["num-examples"] == n_train


def test_client_app_without_its_file_fails_with_the_reason(tmp_path: Path, scenario, server_identity) -> None:
    from fedsim.clients.app import app

    ctx = _context(scenario, {"partition-file": str(tmp_path / "client-0.npz")})
    query = Message(
        RecordDict({"config": ConfigRecord({"server-round": 0})}),
        dst_node_id=7,
        message_type=MessageType.QUERY,
    )
    with pytest.raises(PartitionFileError, match=r"client-0\.npz not found on this SuperNode"):
        app(query, ctx)


def test_cli_data_export(tmp_path: Path, write_scenario) -> None:
    path = write_scenario()
    res = cli("data", "export", str(path), str(tmp_path / "out"), "--set", "clients.num=4")
    assert res.returncode == 0, res.stderr
    assert "4 partition files of tiny" in res.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"client-{i}.npz" for i in range(4)]
    res = cli("data", "export", str(path), str(tmp_path / "bad"), "--set", "clients.num=0")
    assert res.returncode == 2 and "clients.num" in res.stderr and not (tmp_path / "bad").exists()
