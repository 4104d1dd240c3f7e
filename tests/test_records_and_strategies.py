"""Pure pieces: array encoding, weighted mean, byte counts, sampling, FedProx's term."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedsim.algorithms import build_strategy
from fedsim.clients.fedprox import proximal_loss
from fedsim.config import Scenario
from fedsim.records import array_view, load_arrays, model_to_arrays, record_nbytes, to_array, weighted_average
from fedsim.strategies.base import NodeInfo, aggregate_evaluation, aggregate_metrics


def test_to_array_is_npy_flower_can_read() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = to_array(x)
    assert a.data == Array(x).data  # byte-identical to Flower's own encoding
    np.testing.assert_array_equal(a.numpy(), x)
    view = array_view(a)
    np.testing.assert_array_equal(view, x)
    assert not view.flags.writeable
    f = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(array_view(Array(f)), f)  # Fortran order falls back to np.load


def test_weighted_average_matches_flower_and_hand_values() -> None:
    recs = [
        ArrayRecord({"w": to_array(np.array([1.0, 2.0], np.float32)), "n": to_array(np.array(2, np.int64))}),
        ArrayRecord({"w": to_array(np.array([4.0, 8.0], np.float32)), "n": to_array(np.array(5, np.int64))}),
    ]
    avg = weighted_average(recs, [1.0, 2.0])
    np.testing.assert_allclose(array_view(avg["w"]), [3.0, 6.0])  # (1*[1,2] + 2*[4,8]) / 3
    assert array_view(avg["n"]).dtype == np.int64 and int(array_view(avg["n"])) == 4
    replies = [
        RecordDict({"arrays": r, "metrics": MetricRecord({"num-examples": w})})
        for r, w in zip(recs, [1, 2], strict=True)
    ]
    flower = aggregate_arrayrecords(replies, "num-examples")
    np.testing.assert_allclose(array_view(avg["w"]), flower["w"].numpy(), rtol=1e-6)


def test_aggregate_metrics_weighted_and_skips_bookkeeping() -> None:
    recs = [
        RecordDict(
            {"m": MetricRecord({"num-examples": 1, "loss": 1.0, "partition-id": 3, "compute-s": 9.0})}
        ),
        RecordDict(
            {"m": MetricRecord({"num-examples": 3, "loss": 2.0, "partition-id": 5, "compute-s": 1.0})}
        ),
    ]
    out = aggregate_metrics(recs, "num-examples")
    assert dict(out) == {"loss": pytest.approx(1.75), "num-examples": 4}


def test_record_nbytes_counts_arrays_and_entries() -> None:
    x = np.zeros(100, np.float32)
    rd = RecordDict({"a": ArrayRecord({"w": to_array(x)}), "c": ConfigRecord({"lr": 0.1, "name": "abc"})})
    assert record_nbytes(rd) == len(to_array(x).data) + 1 + (2 + 8) + (4 + 3)


def test_load_arrays_in_place_and_mismatch() -> None:
    model = torch.nn.Linear(3, 2)
    other = torch.nn.Linear(3, 2)
    weight = model.weight
    load_arrays(model, model_to_arrays(other))
    assert model.weight is weight  # same tensor, new values
    torch.testing.assert_close(model.weight, other.weight)
    with pytest.raises(ValueError, match="missing"):
        load_arrays(model, ArrayRecord({"weight": to_array(np.zeros((2, 3), np.float32))}))


def nodes(n: int) -> list[NodeInfo]:
    return [NodeInfo(node_id=500 + 7 * i, partition_id=i, num_train=10, num_test=2) for i in range(n)]


def test_sampling_by_partition_is_seeded_and_runtime_independent() -> None:
    sc = Scenario(name="s", rounds=5, clients={"num": 20, "fraction": 0.25})
    a, b = build_strategy(sc), build_strategy(sc)
    a.setup(sc, nodes(20))
    shuffled = nodes(20)[::-1]
    b.setup(sc, [NodeInfo(n.node_id * 3, n.partition_id, 10, 2) for n in shuffled])  # other node ids
    for rnd in range(1, 6):
        pa = [n.partition_id for n in a.sample(rnd, 0, 5)]
        pb = [n.partition_id for n in b.sample(rnd, 0, 5)]
        assert pa == pb and len(set(pa)) == 5
    assert [n.partition_id for n in a.sample(1, 0, 5)] != [n.partition_id for n in a.sample(2, 0, 5)]


def test_fedprox_sends_mu_and_term_matches_hand_value(server_identity: None) -> None:
    sc = Scenario(name="s", rounds=1, algorithm={"name": "fedprox", "mu": 0.5}, clients={"num": 2})
    strategy = build_strategy(sc)
    strategy.setup(sc, nodes(2))
    msgs = list(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), None))
    assert [m.content["config"]["proximal-mu"] for m in msgs] == [0.5, 0.5]
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(3.0)
    loss_fn = proximal_loss([torch.tensor([[1.0]])], mu=0.5)
    x, y = torch.zeros(4, 1), torch.zeros(4, dtype=torch.long)
    # logits are all zero -> CE = log(1) = 0 for a single class; prox = 0.5/2 * (3-1)^2 = 1
    loss, _ = loss_fn(model, x, y)
    assert float(loss) == pytest.approx(1.0)


def _metrics(*rows: dict) -> list[RecordDict]:
    return [RecordDict({"m": MetricRecord(r)}) for r in rows]


def test_aggregate_evaluation_is_the_unweighted_client_mean_with_the_weighted_one_beside() -> None:
    nan = float("nan")
    recs = _metrics(
        # client 0: 10 test samples, no tail class in its own local test set
        {"num-examples": 10, "accuracy": 0.9, "loss": 1.0, "accuracy-tail": nan, "num-examples-tail": 0},
        {"num-examples": 30, "accuracy": 0.5, "loss": 3.0, "accuracy-tail": 0.25, "num-examples-tail": 4},
        {"num-examples": 60, "accuracy": 0.7, "loss": 2.0, "accuracy-tail": 0.75, "num-examples-tail": 4},
    )
    out = dict(aggregate_evaluation(recs, "num-examples"))
    assert out["accuracy"] == pytest.approx((0.9 + 0.5 + 0.7) / 3)  # every client counts once
    assert out["accuracy-weighted"] == pytest.approx((9 + 15 + 42) / 100)  # by local test size
    assert out["loss"] == pytest.approx(2.0) and "loss-weighted" not in out
    assert out["accuracy-tail"] == pytest.approx(0.5)  # over the two clients that have tail samples
    assert "accuracy-tail-weighted" not in out
    assert out["num-examples"] == 100 and out["num-examples-tail"] == 8


def test_a_group_no_client_has_is_absent_not_zero() -> None:
    nan = float("nan")
    recs = _metrics(
        {"num-examples": 5, "accuracy": 1.0, "accuracy-middle": nan, "num-examples-middle": 0},
        {"num-examples": 5, "accuracy": 0.0, "accuracy-middle": nan, "num-examples-middle": 0},
    )
    for aggregate in (aggregate_evaluation, aggregate_metrics):
        out = dict(aggregate(recs, "num-examples"))
        assert "accuracy-middle" not in out and out["num-examples-middle"] == 0


def test_group_accuracy_of_an_empty_group_is_nan_and_server_rows_leave_it_out() -> None:
    from fedsim.metrics import group_accuracy, local_class_groups

    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])  # balanced: both classes head
    groups = local_class_groups(y, 3)
    assert groups["head"].tolist() == [0, 1] and groups["middle"].numel() == groups["tail"].numel() == 0
    pred = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    out = group_accuracy(pred, y, groups)
    assert out["accuracy-head"] == pytest.approx(7 / 8) and out["num-examples-head"] == 8
    assert np.isnan(out["accuracy-middle"]) and np.isnan(out["accuracy-tail"])
