"""Faults in scenarios: injected crashes, lost, late and corrupted replies; robust rounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from rich.console import Console

from fedsim.config import ConfigError
from fedsim.errors import RunFailed
from fedsim.faults import DROPPED_KEY, corrupted, faults_of
from fedsim.loader import load_scenario
from fedsim.methods.robust import AggregationParams, aggregate
from fedsim.records import arrays_to_numpy, numpy_to_arrays
from fedsim.runner import start_run
from fedsim.server.screening import problem
from tests.conftest import merge


def _scenario(write_scenario, faults: dict, **extra):
    return load_scenario(write_scenario(merge({"faults": faults}, extra)))


def test_faults_are_drawn_per_seed_round_and_client_within_the_clients_named(write_scenario) -> None:
    sc = _scenario(write_scenario, {"crash": {"rate": 0.5}, "corrupt": {"rate": 1.0, "clients": [1, 4]}})
    draws = {(r, p): faults_of(sc, r, p) for r in range(1, 21) for p in range(6)}
    assert draws == {(r, p): faults_of(sc, r, p) for r in range(1, 21) for p in range(6)}  # reproducible
    crashes = sum("crash" in f for f in draws.values()) / len(draws)
    assert 0.35 < crashes < 0.65  # rate 0.5 over 120 draws
    assert all(("corrupt" in f) == (p in (1, 4)) for (_, p), f in draws.items())
    assert faults_of(sc, 3, 0, attempt=1) is not None  # a retried sample draws afresh
    fraction = _scenario(write_scenario, {"drop_reply": {"rate": 1.0, "clients": 0.5}})
    struck = {p for p in range(6) if faults_of(fraction, 1, p)}
    assert len(struck) == 3 and struck == {p for p in range(6) if faults_of(fraction, 7, p)}  # drawn once
    assert faults_of(load_scenario(write_scenario()), 1, 0) == []  # no faults: none injected


def test_a_fraction_outside_0_1_and_retry_with_a_clock_are_one_line(write_scenario) -> None:
    with pytest.raises(ConfigError, match=r"clients as a fraction must be in \(0, 1\], got 1.5"):
        _scenario(write_scenario, {"crash": {"rate": 0.1, "clients": 1.5}})
    with pytest.raises(ConfigError, match=r"faults.on_too_few: retry cannot be used with a system: section"):
        _scenario(
            write_scenario,
            {"on_too_few": "retry"},
            system={"mix": [{"share": 1.0, "device": "rpi4", "network": "wifi"}]},
        )
    with pytest.raises(ConfigError, match=r"aggregator clip needs clip_norm"):
        load_scenario(write_scenario({"algorithm": {"name": "fedavg", "aggregator": "clip"}}))


def _reply(node: int, arrays: dict[str, np.ndarray], **metrics: float) -> Message:
    sent = Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=node, message_type=MessageType.TRAIN)
    content = RecordDict(
        {"arrays": numpy_to_arrays(arrays), "metrics": MetricRecord({"num-examples": 5, **metrics})}
    )
    return Message(content, reply_to=sent)


def test_replies_are_screened_before_aggregation(server_identity) -> None:
    good = {"w": np.ones((2, 3), np.float32), "n": np.array(3, np.int64)}
    template = numpy_to_arrays(good)
    assert problem(_reply(7, good), {7}, template) is None
    assert problem(_reply(8, good), {7}, template) == "node 8 was not asked this round"
    assert problem(_reply(7, good, **{DROPPED_KEY: 1}), {7}, template) == "reply lost (faults.drop_reply)"
    nan = {**good, "w": np.full((2, 3), np.nan, np.float32)}
    assert problem(_reply(7, nan), {7}, template) == "array w holds NaN or Inf"
    assert problem(_reply(7, nan), {7}, None) == "array w holds NaN or Inf"  # also with no template
    shape = {**good, "w": np.ones((3, 2), np.float32)}
    assert problem(_reply(7, shape), {7}, template) == "array w is float32 [3, 2], expected float32 [2, 3]"
    dtype = {**good, "w": np.ones((2, 3), np.float64)}
    assert problem(_reply(7, dtype), {7}, template) == "array w is float64 [2, 3], expected float32 [2, 3]"
    assert problem(_reply(7, {"w": good["w"]}), {7}, template) == (
        "arrays do not match the model: missing ['n'], unexpected []"
    )


def test_robust_aggregators_on_known_values() -> None:
    start = numpy_to_arrays({"w": np.zeros(3, np.float32)})
    values = [[1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 6], [100, -100, 100]]
    records = [numpy_to_arrays({"w": np.array(v, np.float32)}) for v in values]
    weights = [1.0, 1.0, 1.0, 1.0, 1.0]

    def run(**params: object) -> np.ndarray:
        return arrays_to_numpy(aggregate(records, weights, start, AggregationParams(**params)))["w"]

    assert run() == pytest.approx([22, -17.2, 23.6])  # the mean follows the outlier
    assert run(aggregator="median") == pytest.approx([3, 3, 5])
    assert run(aggregator="trimmed_mean", trim_fraction=0.2) == pytest.approx(
        [3, 3, 5]
    )  # one dropped each end
    assert run(aggregator="trimmed_mean", trim_fraction=0.0) == pytest.approx(
        run()
    )  # nothing dropped: the mean
    clipped = run(aggregator="clip", clip_norm=1.0)
    # every update (from zero) has norm > 1: each is scaled to norm 1, then averaged
    unit = [np.array(v, np.float64) / np.linalg.norm(v) for v in values]
    assert clipped == pytest.approx(np.mean(unit, axis=0), abs=1e-6)
    ints = [numpy_to_arrays({"n": np.array(v, np.int64)}) for v in (3, 4, 8)]
    assert (
        int(arrays_to_numpy(aggregate(ints, [1, 1, 1], ints[0], AggregationParams(aggregator="median")))["n"])
        == 4
    )


def test_a_corrupted_update_is_nan_inf_or_scaled(write_scenario) -> None:
    start = numpy_to_arrays({"w": np.ones(2, np.float32), "n": np.array(1, np.int64)})
    trained = numpy_to_arrays({"w": np.array([2.0, 0.0], np.float32), "n": np.array(2, np.int64)})
    for mode, check in [("nan", np.isnan), ("inf", np.isinf)]:
        sc = _scenario(write_scenario, {"corrupt": {"rate": 1.0, "mode": mode}})
        out = arrays_to_numpy(corrupted(trained, start, sc))
        assert check(out["w"]).all() and int(out["n"]) == 2  # integer arrays untouched
    sc = _scenario(write_scenario, {"corrupt": {"rate": 1.0, "mode": "scale", "scale": -3.0}})
    assert arrays_to_numpy(corrupted(trained, start, sc))["w"] == pytest.approx([-2.0, 4.0])  # 1 - 3 * (+-1)


def _run(write_scenario, extra: dict, sets: list[str] | None = None):
    folder, summary = start_run(write_scenario(extra), sets or [], None, False, False, Console(quiet=True))
    return folder, summary


FAULTY = {
    "rounds": 3,
    "clients": {"num": 6, "fraction": 1.0, "min": 2},
    "faults": {
        "crash": {"rate": 0.2},
        "drop_reply": {"rate": 0.2},
        "corrupt": {"rate": 0.2, "mode": "nan"},
        "hang": {"rate": 0.2, "seconds": 0.05},
    },
}


@pytest.mark.slow
def test_injected_faults_are_recorded_and_never_reach_the_model(write_scenario) -> None:
    folder, summary = _run(write_scenario, FAULTY)
    assert summary["status"] == "completed"
    rows = [r for r in folder.read("clients.jsonl") if r["phase"] == "train"]
    assert len(rows) == 18  # every sampled client has a row, whatever happened to it
    seen = {f for r in rows for f in (r["fault"] or "").split("+") if f}
    assert seen == {"crash", "drop_reply", "corrupt", "hang"}
    for r in rows:
        faults = (r["fault"] or "").split("+")
        if "crash" in faults:
            assert "injected fault: client" in r["error"] and "crashed" in r["error"]
        elif "drop_reply" in faults:
            assert r["rejected"] == "reply lost (faults.drop_reply)"
        elif "corrupt" in faults:
            assert r["rejected"].endswith("holds NaN or Inf")
        else:
            assert "rejected" not in r and "error" not in r
            assert ("fault_hang_s" in r) == ("hang" in faults)
    metrics = folder.read("metrics.jsonl")[1:]
    for m in metrics:
        mine = [r for r in rows if r["round"] == m["round"]]
        assert m["clients_rejected"] == sum("rejected" in r for r in mine)
        assert m["clients_ok"] == sum("rejected" not in r and "error" not in r for r in mine)
        assert math.isfinite(m["server_loss"])
    # the same faults on the sharded workers: identical rows
    folder2, _ = _run(write_scenario, FAULTY, ["runtime.workers=2"])
    keys = ("round", "partition_id", "fault", "rejected", "error")
    again = [r for r in folder2.read("clients.jsonl") if r["phase"] == "train"]
    assert [[r.get(k) for k in keys] for r in rows] == [[r.get(k) for k in keys] for r in again]
    # (the workers run one torch thread each: losses agree to float rounding, not bit for bit)
    assert [r.get("loss") for r in again] == pytest.approx([r.get("loss") for r in rows], abs=1e-5)


@pytest.mark.slow
def test_too_few_replies_skip_fail_or_retry_as_the_scenario_says(write_scenario) -> None:
    everyone = {"rounds": 2, "faults": {"crash": {"rate": 1.0}}}
    folder, summary = _run(write_scenario, merge(everyone, {"faults": {"on_too_few": "skip"}}))
    metrics = folder.read("metrics.jsonl")
    assert summary["status"] == "completed"
    assert [m["skipped"] for m in metrics[1:]] == [True, True]
    assert metrics[0]["server_loss"] == metrics[2]["server_loss"]  # never aggregated from nothing
    failing = merge(everyone, {"faults": {"on_too_few": "fail"}})
    with pytest.raises(
        RunFailed, match=r"round 1: 0 of 3 replies accepted, fewer than clients.min=2 \(faults"
    ) as err:
        _run(write_scenario, failing)
    assert "first problem: InjectedCrash: injected fault: client" in str(err.value)
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)  # one line
    half = {"rounds": 3, "faults": {"crash": {"rate": 0.6}, "on_too_few": "retry", "retries": 3}}
    folder, summary = _run(write_scenario, half)
    metrics = folder.read("metrics.jsonl")[1:]
    rows = [r for r in folder.read("clients.jsonl") if r["phase"] == "train"]
    assert any(m["retries"] > 0 for m in metrics)
    for m in metrics:
        attempts = {r.get("attempt", 0) for r in rows if r["round"] == m["round"]}
        assert attempts == set(range(m["retries"] + 1))  # each new sample has its rows
        assert m["skipped"] or m["clients_ok"] >= 2


@pytest.mark.slow
def test_poisoned_updates_sink_fedavg_and_the_median_holds(write_scenario) -> None:
    base = {
        "rounds": 5,
        "data": {"partition": {"alpha": 100.0}},  # about iid
        "clients": {"num": 10, "fraction": 1.0, "min": 5},
        "evaluation": {"server_every": 5, "clients_every": 0},
    }
    poison = {"faults": {"corrupt": {"rate": 1.0, "clients": 0.2, "mode": "scale", "scale": -10.0}}}

    def accuracy(extra: dict) -> float:
        folder, summary = _run(write_scenario, merge(base, extra))
        assert summary["status"] == "completed"
        return float(folder.read("metrics.jsonl")[-1]["server_accuracy"])

    clean = accuracy({})
    mean = accuracy(poison)
    median = accuracy(merge(poison, {"algorithm": {"name": "fedavg", "aggregator": "median"}}))
    assert clean > 0.5
    assert mean < clean - 0.3  # two clients of ten sink the mean
    assert median > mean + 0.3 and median > clean - 0.2  # the median holds


@pytest.mark.slow
def test_flowers_simulation_engine_injects_the_same_faults_and_keeps_the_deadline(write_scenario) -> None:
    # client 1 hangs every round: on Flower's engine its reply really comes 3 s late (the
    # deadline is the messages' timeout); in process its reported seconds are judged. One hung
    # client at a time: the engine's other slot keeps the others on time.
    hang = {"rate": 1.0, "clients": [1], "seconds": 3.0}
    others = {"clients": [0, 2, 3, 4, 5]}
    faults = {"hang": hang, "crash": others, "drop_reply": others, "corrupt": others}
    faulty = merge(FAULTY, {"rounds": 2, "faults": faults, "runtime": {"round_deadline_s": 2.0}})
    rows = {}
    for runtime in ("inprocess", "ray"):
        folder, summary = _run(write_scenario, faulty, [f"runtime.name={runtime}"])
        assert summary["status"] == "completed"
        rows[runtime] = [r for r in folder.read("clients.jsonl") if r["phase"] == "train"]
        late = [r for r in rows[runtime] if r["fault"] == "hang"]
        assert len(late) == 2 and all("round_deadline_s=2 s" in r["rejected"] for r in late)
        # Flower's engine drops a reply past the messages' timeout, but on a loaded machine it
        # may still deliver one: fedsim then rejects it by its reported seconds (both are late).
        expected = ("no reply within", "reply after 3.0") if runtime == "ray" else ("reply after 3.0",)
        assert all(r["rejected"].startswith(expected) for r in late), [r["rejected"] for r in late]
    same = ("round", "partition_id", "fault")
    assert [[r[k] for k in same] for r in rows["ray"]] == [[r[k] for k in same] for r in rows["inprocess"]]
    assert any(r["fault"] not in (None, "hang") for r in rows["ray"])
    for here, there in zip(rows["inprocess"], rows["ray"], strict=True):
        if there.get("rejected", "").startswith("no reply within"):
            continue  # a hung client holds one of the engine's slots: any reply may come too late
        assert ("error" in here) == ("error" in there)
        assert here.get("rejected", "").split(" ")[:2] == there.get("rejected", "").split(" ")[:2]


def test_a_real_deadline_and_a_system_clock_are_one_line(write_scenario) -> None:
    system = {"mix": [{"share": 1.0, "device": "rpi4", "network": "wifi"}]}
    with pytest.raises(
        ConfigError, match=r"runtime.round_deadline_s judges real time; with a system: section"
    ):
        load_scenario(write_scenario({"runtime": {"round_deadline_s": 2.0}, "system": system}))
