"""System model arithmetic on hand-made cases: transfers, energy, round policies, profiles."""

from __future__ import annotations

import pytest

from fedsim.config import RoundPolicySpec, SystemSpec
from fedsim.system.clock import POLICIES, assign_profiles, status_of
from fedsim.system.profiles import DEVICES, NETWORKS, DeviceProfile, NetworkProfile
from fedsim.system.timing import ClientTiming, energy_j, transfer_s

LINK = NetworkProfile(
    "l", uplink_mbps=8.0, downlink_mbps=16.0, rtt_ms=40.0, jitter_ms=10.0, loss=0.2, source=""
)
DEV = DeviceProfile("d", gflops=1.0, idle_w=1.0, compute_w=5.0, transmit_w=3.0, memory_gb=1.0, source="")


def test_transfer_time_is_size_over_rate_plus_half_rtt_and_jitter() -> None:
    # 1e6 bytes = 8e6 bits at 8 Mbit/s = 1 s, / (1 - 0.2) = 1.25 s; + 20 ms one way
    assert transfer_s(1_000_000, 8.0, LINK) == pytest.approx(1.25 + 0.020)
    assert transfer_s(1_000_000, 8.0, LINK, jitter_u=1.0) == pytest.approx(1.25 + 0.030)  # +10 ms
    assert transfer_s(1_000_000, 8.0, LINK, jitter_u=0.0) == pytest.approx(1.25 + 0.010)  # -10 ms
    assert transfer_s(0, 8.0, LINK) == pytest.approx(0.020)


def test_energy_integrates_power_over_phases_and_window() -> None:
    t = ClientTiming(download_s=1.0, compute_s=2.0, upload_s=0.5)
    assert t.finish_s == 3.5
    # radio 1.5 s at 3 W + compute 2 s at 5 W + idle (5 - 3.5) s at 1 W
    assert energy_j(DEV, t, end_s=5.0) == pytest.approx(4.5 + 10.0 + 1.5)
    # stopped at 2 s: 1 s download + 1 s compute, nothing else
    assert energy_j(DEV, t, end_s=2.0) == pytest.approx(3.0 + 5.0)
    assert energy_j(DEV, t, end_s=0.0) == 0.0


FINISH = {0: 1.0, 1: 3.0, 2: 2.0, 3: 5.0, 4: 4.0}
ALWAYS = dict.fromkeys(FINISH, float("inf"))


def statuses(policy: RoundPolicySpec, k: int, finish: dict, off: dict) -> tuple[float, dict[int, str]]:
    end, kept = POLICIES[policy.policy](policy, k, finish, off)
    return end, {p: status_of(p, kept, end, finish, off) for p in finish}


def test_wait_all_waits_for_the_slowest() -> None:
    end, st = statuses(RoundPolicySpec(), 5, FINISH, ALWAYS)
    assert end == 5.0 and set(st.values()) == {"ok"}


@pytest.mark.parametrize("deadline", [0.5, 1.0, 2.5, 4.0, 4.5, 9.0])
def test_deadline_discards_exactly_the_clients_finishing_after_it(deadline: float) -> None:
    end, st = statuses(RoundPolicySpec(policy="deadline", deadline_s=deadline), 5, FINISH, ALWAYS)
    assert {p for p, s in st.items() if s == "late"} == {p for p, f in FINISH.items() if f > deadline}
    assert {p for p, s in st.items() if s == "ok"} == {p for p, f in FINISH.items() if f <= deadline}
    assert end == min(deadline, max(FINISH.values()))


def test_overcommit_keeps_the_first_k_finishers() -> None:
    end, st = statuses(RoundPolicySpec(policy="overcommit"), 3, FINISH, ALWAYS)
    assert end == 3.0
    assert st == {0: "ok", 2: "ok", 1: "ok", 3: "late", 4: "late"}
    # a client going off before finishing is not a finisher: the next one takes its place
    off = {**ALWAYS, 2: 1.5}
    end, st = statuses(RoundPolicySpec(policy="overcommit"), 3, FINISH, off)
    assert end == 4.0 and st == {0: "ok", 1: "ok", 2: "dropped", 3: "late", 4: "ok"}
    # ties at the k-th finish go to the lower partition id
    end, st = statuses(RoundPolicySpec(policy="overcommit"), 1, {7: 1.0, 3: 1.0}, {7: 9.0, 3: 9.0})
    assert st == {3: "ok", 7: "late"}


def test_drop_out_before_finishing() -> None:
    off = {**ALWAYS, 3: 2.5, 0: 1.0}  # 3 leaves mid-round; 0 leaves exactly when it finishes
    end, st = statuses(RoundPolicySpec(), 5, FINISH, off)
    assert st[3] == "dropped" and st[0] == "ok"
    assert end == 4.0  # the round no longer waits for client 3
    # under a deadline, a client still running at the deadline is late even if it leaves later
    end, st = statuses(RoundPolicySpec(policy="deadline", deadline_s=2.0), 5, FINISH, {**ALWAYS, 3: 4.5})
    assert st[3] == "late" and end == 2.0


def test_profile_assignment_follows_shares_and_seed() -> None:
    spec = SystemSpec(
        mix=[
            {"share": 0.6, "device": "rpi4", "network": "wifi"},
            {"share": 0.3, "device": "jetson-nano", "network": "lte"},
            {"share": 0.1, "device": "jetson-orin", "network": "wifi"},
        ]
    )
    a = assign_profiles(spec, 25, seed=1)
    counts = {name: sum(d.name == name for d, _ in a) for name in ("rpi4", "jetson-nano", "jetson-orin")}
    assert counts == {"rpi4": 15, "jetson-nano": 8, "jetson-orin": 2}  # 15 + 7.5 + 2.5, largest remainder
    assert all(n.name == "lte" for d, n in a if d.name == "jetson-nano")
    assert assign_profiles(spec, 25, seed=1) == a
    assert assign_profiles(spec, 25, seed=2) != a


def test_registries_hold_the_documented_profiles() -> None:
    assert {"jetson-nano", "jetson-orin", "rpi4", "gpu-server", "this-host"} <= set(DEVICES.names())
    assert {"wifi", "lte", "3g"} <= set(NETWORKS.names())
    assert NETWORKS.get("lte").uplink_mbps == 5.85
    assert DEVICES.get("rpi4").gflops == pytest.approx(18.2)


def test_sampler_draws_only_available_partitions_deterministically() -> None:
    from fedsim.algorithms import build_strategy
    from fedsim.config import Scenario
    from fedsim.strategies.base import NodeInfo

    sc = Scenario(name="s", rounds=5, clients={"num": 20, "fraction": 0.25})
    strategy = build_strategy(sc)
    strategy.setup(sc, [NodeInfo(100 + i, i, 10, 2) for i in range(20)])
    available = {1, 3, 4, 8, 9, 12, 15, 17, 19}
    picks = [n.partition_id for n in strategy.sample(2, 0, 5, available)]
    assert len(set(picks)) == 5 and set(picks) <= available
    assert [n.partition_id for n in strategy.sample(2, 0, 5, available)] == picks
    assert [n.partition_id for n in strategy.sample(2, 0, 50, available)] == sorted(available)
    unfiltered = [n.partition_id for n in strategy.sample(2, 0, 5)]
    assert [n.partition_id for n in strategy.sample(2, 0, 5, range(20))] == unfiltered


def test_compute_models() -> None:
    from fedsim.config import Scenario
    from fedsim.system.compute import COMPUTE_MODELS, host_gflops, train_flops_per_sample

    sc = Scenario(name="s", rounds=1, model={"name": "mlp", "hidden": [16]}, train={"local_epochs": 3})
    assert train_flops_per_sample(sc) == 2368 + 2368 + 320  # see test_system_rounds.MLP_FLOPS
    row = {"num_examples": 100, "cpu_s": 2.0}
    assert COMPUTE_MODELS["flops"](sc, DEV, row) == pytest.approx(5056 * 100 * 3 / 1e9)
    host = host_gflops(sc)
    assert host > 0 and host_gflops(sc) == host  # calibrated once per process
    assert COMPUTE_MODELS["measured"](sc, DEV, row) == pytest.approx(2.0 * host / 1.0)
    this_host = DEVICES.get("this-host")
    assert COMPUTE_MODELS["measured"](sc, this_host, row) == pytest.approx(2.0)
    assert COMPUTE_MODELS["flops"](sc, this_host, row) == pytest.approx(5056 * 100 * 3 / (host * 1e9))
