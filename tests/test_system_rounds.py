"""The system model inside real runs: hand-computed round time and energy, discarded
updates not aggregated, the same virtual timeline on every run and after a resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from rich.console import Console

from fedsim.records import arrays_to_numpy, weighted_average
from fedsim.runner import resume_run, start_run
from fedsim.runtimes.inprocess import InProcessGrid
from fedsim.strategies.base import FedsimStrategyMixin
from fedsim.system.profiles import (
    DEVICES,
    NETWORKS,
    DeviceProfile,
    NetworkProfile,
    register_device,
    register_network,
)
from tests.helpers import final_arrays, rows

QUIET = Console(quiet=True)

#: One flat profile for every client: no jitter, no loss, slow enough that compute counts.
DEV = DeviceProfile(
    "test-flat", gflops=0.001, idle_w=1.0, compute_w=4.0, transmit_w=2.0, memory_gb=1.0, source="test"
)
NET = NetworkProfile(
    "test-flat", uplink_mbps=1.0, downlink_mbps=2.0, rtt_ms=20.0, jitter_ms=0.0, loss=0.0, source="test"
)
if DEV.name not in DEVICES:
    register_device(DEV)
if NET.name not in NETWORKS:
    register_network(NET)

#: Training FLOPs per sample of an MLP 64 -> 16 -> 10 (digits), counted by hand:
#: forward 2*64*16 + 2*16*10 = 2368; weight gradients the same 2368; input gradient of
#: the second layer only (the input needs none) 2*16*10 = 320.
MLP_FLOPS = 2368 + 2368 + 320

FLAT: dict[str, Any] = {
    "rounds": 1,
    "model": {"name": "mlp", "hidden": [16]},
    "evaluation": {"server_every": 0, "clients_every": 0},
    "system": {"mix": [{"share": 1.0, "device": "test-flat", "network": "test-flat"}]},
}


def mlp_scenario(write_scenario, extra: dict[str, Any]) -> Path:
    """TINY with a small MLP (replacing, not merging into, TINY's CNN parameters)."""
    path = write_scenario(extra)
    data = yaml.safe_load(path.read_text())
    data["model"] = FLAT["model"]
    path.write_text(yaml.safe_dump(data))
    return path


def run(path: Path, stop_after: int | None = None) -> Path:
    folder, _ = start_run(path, [], stop_after, False, False, QUIET)
    return folder.path


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_flat_profile_round_time_and_energy_by_hand(write_scenario) -> None:
    out = run(mlp_scenario(write_scenario, FLAT))
    train = [r for r in jsonl(out / "clients.jsonl") if r["phase"] == "train"]
    assert len(train) == 3  # 6 clients, fraction 0.5
    hand = {}
    for r in train:
        d = r["bytes_down"] * 8 / 2e6 + 0.010  # over 2 Mbit/s, + RTT/2
        c = MLP_FLOPS * r["num_examples"] * 1 / 1e6  # 1 local epoch at 1 MFLOP/s
        u = r["bytes_up"] * 8 / 1e6 + 0.010
        hand[r["partition_id"]] = (d, c, u, d + c + u)
        assert (r["download_s"], r["compute_s_virtual"], r["upload_s"]) == pytest.approx((d, c, u))
        assert r["status"] == "ok"
    end = max(f for *_, f in hand.values())
    energy = sum(2.0 * (d + u) + 4.0 * c + 1.0 * (end - f) for d, c, u, f in hand.values())
    m = jsonl(out / "metrics.jsonl")
    assert m[0]["virtual_time_s"] == 0.0 and m[0]["energy_J"] == 0.0
    assert m[1]["round_virtual_s"] == pytest.approx(end)
    assert m[1]["virtual_time_s"] == pytest.approx(end)
    assert m[1]["energy_J"] == pytest.approx(energy)
    assert m[1]["energy_J_test_flat"] == pytest.approx(energy)
    assert (m[1]["dropped"], m[1]["late"]) == (0, 0)


def test_dropped_update_is_not_aggregated(write_scenario, tmp_path: Path, monkeypatch) -> None:
    trace = tmp_path / "trace.csv"
    lines = ["partition_id,start_s,end_s"] + [f"{p},0,1e9" for p in (0, 1, 3, 4, 5)] + ["2,0,0.001"]
    trace.write_text("\n".join(lines) + "\n")
    replies: list = []
    aggregated: list[int] = []
    send = InProcessGrid.send_and_receive
    aggregate = FedsimStrategyMixin.aggregate_train

    def spy_send(self, messages, timeout=None):
        out = list(send(self, messages, timeout=timeout))
        if all(m.metadata.message_type == "train" for m in out):
            replies.extend(out)
        return out

    def spy_aggregate(self, server_round, msgs):
        msgs = list(msgs)
        aggregated.extend(self.partition_of(m) for m in msgs)
        return aggregate(self, server_round, msgs)

    monkeypatch.setattr(InProcessGrid, "send_and_receive", spy_send)
    monkeypatch.setattr(FedsimStrategyMixin, "aggregate_train", spy_aggregate)
    scenario = {
        **FLAT,
        "clients": {"num": 6, "fraction": 1.0, "min": 1},
        "system": {**FLAT["system"], "availability": {"model": "trace", "trace": str(trace)}},
    }
    out = run(mlp_scenario(write_scenario, scenario))
    pids = [r.metadata.src_node_id - 1000 for r in replies]
    assert sorted(pids) == [0, 1, 2, 3, 4, 5]  # client 2 trained and answered ...
    assert sorted(aggregated) == [0, 1, 3, 4, 5]  # ... but its update was not aggregated
    rows_ = {r["partition_id"]: r for r in jsonl(out / "clients.jsonl")}
    assert rows_[2]["status"] == "dropped"
    assert rows_[2]["energy_J"] == pytest.approx(2.0 * 0.001)  # downloading when it went off
    assert jsonl(out / "metrics.jsonl")[1]["dropped"] == 1

    def mean(keep: set[int]) -> dict[str, np.ndarray]:
        chosen = [r for r, p in zip(replies, pids, strict=True) if p in keep]
        weights = [float(r.content["metrics"]["num-examples"]) for r in chosen]
        return arrays_to_numpy(weighted_average([r.content["arrays"] for r in chosen], weights))

    without, with_ = mean({0, 1, 3, 4, 5}), mean({0, 1, 2, 3, 4, 5})
    final = final_arrays(out)
    for key, value in final.items():
        np.testing.assert_array_equal(value, without[key])
    assert any(not np.array_equal(final[k], with_[k]) for k in final)


HETERO: dict[str, Any] = {
    "rounds": 3,
    "clients": {"num": 8, "fraction": 0.5, "min": 1},
    "evaluation": {"server_every": 1, "clients_every": 0},
    "output": {"checkpoint_every": 1},
    "system": {
        "mix": [
            {"share": 0.5, "device": "rpi4", "network": "wifi"},
            {"share": 0.5, "device": "jetson-nano", "network": "lte"},
        ],
        "availability": {"model": "markov", "mean_on_s": 1.0, "mean_off_s": 0.5},
        "round": {"policy": "deadline", "deadline_s": 0.05},
    },
}


@pytest.mark.slow
def test_same_seed_same_virtual_timeline_and_resume(write_scenario) -> None:
    path = mlp_scenario(write_scenario, HETERO)
    a, b = run(path), run(path)
    ma, mb = rows(a / "metrics.jsonl"), rows(b / "metrics.jsonl")
    assert ma == mb and rows(a / "clients.jsonl") == rows(b / "clients.jsonl")
    times = [r["virtual_time_s"] for r in ma]
    assert times == sorted(times) and times[-1] > 0
    assert [r["energy_J"] for r in ma] == [r["energy_J"] for r in mb]
    statuses = {r["status"] for r in rows(a / "clients.jsonl") if r["phase"] == "train"}
    assert "late" in statuses  # LTE clients miss the 0.05 s deadline (RTT alone is 50 ms)
    part = run(path, stop_after=2)  # the clock and energy totals continue from round 2
    resume_run(part, None, None, False, False, QUIET)
    assert rows(part / "metrics.jsonl") == ma
    assert rows(part / "clients.jsonl") == rows(a / "clients.jsonl")


@pytest.mark.slow
def test_overcommit_samples_more_and_keeps_k(write_scenario) -> None:
    system = {**HETERO["system"], "availability": {"model": "always"}, "round": {"policy": "overcommit"}}
    out = run(mlp_scenario(write_scenario, {**HETERO, "rounds": 2, "system": system}))
    for m in jsonl(out / "metrics.jsonl")[1:]:
        assert m["clients_sampled"] == 6  # ceil(1.3 * 4)
        assert m["clients_ok"] == 4 and m["late"] == 2
    for rnd in (1, 2):
        train = [r for r in jsonl(out / "clients.jsonl") if r["round"] == rnd and r["phase"] == "train"]
        kept = sorted(r["finish_s"] for r in train if r["status"] == "ok")
        late = sorted(r["finish_s"] for r in train if r["status"] == "late")
        assert len(kept) == 4 and max(kept) <= min(late)


@pytest.mark.slow
def test_split_plan_reports_the_planners_choice_for_each_device_and_link(
    write_scenario, tmp_path: Path
) -> None:
    from tests.helpers import cli

    mix = [
        {"share": 0.5, "device": "rpi4", "network": "3g"},
        {"share": 0.5, "device": "jetson-nano", "network": "wifi"},
    ]
    system = {"mix": mix, "split_plan": {"model": "resnet18", "size": 224}}
    clients = {"num": 4, "fraction": 1.0, "min": 1}
    out = run(mlp_scenario(write_scenario, {**FLAT, "clients": clients, "system": system}))
    train = [r for r in jsonl(out / "clients.jsonl") if r["phase"] == "train"]
    by = {(r["device"], r["network"]): r for r in train}
    assert len(train) == 4 and set(by) == {("rpi4", "3g"), ("jetson-nano", "wifi")}
    slow = by[("rpi4", "3g")]
    assert slow["split_plan"] == "local" and slow["split_plan_latency_ms"] == pytest.approx(100.0)
    assert slow["split_plan_energy_mJ"] == pytest.approx(DEVICES.get("rpi4").compute_w * 100.0)
    plan = cli(
        "edge",
        "plan",
        "resnet18",
        "--device",
        "jetson-nano",
        "--network",
        "wifi",
        "--out",
        str(tmp_path / "p"),
    )
    assert plan.returncode == 0, plan.stderr
    assert (
        by[("jetson-nano", "wifi")]["split_plan"]
        == json.loads((tmp_path / "p" / "plan.json").read_text())["chosen"]
    )
