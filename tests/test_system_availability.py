"""Availability processes against their definitions; scenario errors of the system section."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fedsim.errors import ConfigError, UserError
from fedsim.loader import load_scenario
from fedsim.system.availability import MarkovOnOff, TraceAvailability, read_trace

MIX = [{"share": 1.0, "device": "rpi4", "network": "wifi"}]


def on_intervals(chain: MarkovOnOff, pid: int, horizon: float) -> list[tuple[float, float]]:
    """The chain's on-intervals up to ``horizon``, read through its public interface."""
    out, t = [], 0.0
    while t < horizon:
        t = chain.next_on(pid, t)
        end = chain.off_at(pid, t)
        assert end is not None and end > t
        out.append((t, end))
        t = end
    return out


def test_markov_holding_times_and_stationary_share() -> None:
    mean_on, mean_off = 10.0, 5.0
    chain = MarkovOnOff(seed=7, mean_on_s=mean_on, mean_off_s=mean_off)
    ivs = on_intervals(chain, 0, 200_000.0)
    on = np.array([b - a for a, b in ivs])
    off = np.array([ivs[i + 1][0] - ivs[i][1] for i in range(len(ivs) - 1)])
    assert on.mean() == pytest.approx(mean_on, rel=0.05)
    assert off.mean() == pytest.approx(mean_off, rel=0.05)
    assert np.std(on) == pytest.approx(mean_on, rel=0.08)  # exponential: std == mean
    # stationary start: at t = 0 a share mean_on / (mean_on + mean_off) of clients is on
    share = np.mean([chain.off_at(p, 0.0) is not None for p in range(4000)])
    assert share == pytest.approx(2 / 3, abs=0.03)
    # and at any later time
    share_later = np.mean([chain.off_at(p, 1234.5) is not None for p in range(4000)])
    assert share_later == pytest.approx(2 / 3, abs=0.03)


def test_markov_is_a_function_of_seed_client_and_time() -> None:
    a, b = MarkovOnOff(3, 10.0, 5.0), MarkovOnOff(3, 10.0, 5.0)
    times = [0.0, 3.0, 50.0, 1000.0, 7.5]
    fwd = [(p, t, a.off_at(p, t), a.next_on(p, t)) for p in range(20) for t in times]
    rev = [(p, t, b.off_at(p, t), b.next_on(p, t)) for p in reversed(range(20)) for t in reversed(times)]
    assert sorted(fwd, key=lambda x: (x[0], x[1])) == sorted(rev, key=lambda x: (x[0], x[1]))
    c = MarkovOnOff(4, 10.0, 5.0)
    assert [c.off_at(p, 100.0) for p in range(20)] != [a.off_at(p, 100.0) for p in range(20)]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return path


def test_trace_intervals(tmp_path: Path) -> None:
    path = write(tmp_path, "partition_id,start_s,end_s\n# comment\n0,20,30\n0,0,10\n0,30,40\n\n2,5,inf\n")
    ivs = read_trace(path, num_clients=3)
    assert ivs == {0: [(0.0, 10.0), (20.0, 40.0)], 2: [(5.0, math.inf)]}  # sorted, touching merged
    tr = TraceAvailability(ivs)
    assert tr.off_at(0, 0.0) == 10.0 and tr.off_at(0, 9.99) == 10.0
    assert tr.off_at(0, 10.0) is None and tr.next_on(0, 10.0) == 20.0
    assert tr.off_at(0, 35.0) == 40.0 and tr.next_on(0, 35.0) == 35.0
    assert tr.off_at(0, 40.0) is None and tr.next_on(0, 40.0) == math.inf
    assert tr.off_at(1, 0.0) is None and tr.next_on(1, 0.0) == math.inf  # no intervals: never on
    assert tr.off_at(2, 1e9) == math.inf


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pid,start,end\n0,0,1\n", "line 1: expected the header partition_id,start_s,end_s"),
        ("partition_id,start_s,end_s\n0,0\n", "line 2: expected 3 fields"),
        ("partition_id,start_s,end_s\n0,0,1\n1,a,2\n", "line 3: expected an integer and two numbers"),
        ("partition_id,start_s,end_s\n9,0,1\n", "line 2: partition_id 9 is outside 0..2"),
        ("partition_id,start_s,end_s\n0,5,5\n", "line 2: expected 0 <= start_s < end_s"),
        ("partition_id,start_s,end_s\n0,-1,5\n", "line 2: expected 0 <= start_s < end_s"),
    ],
)
def test_malformed_trace_one_line_error_with_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UserError) as err:
        read_trace(path, num_clients=3)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}, ") and expected in msg


def test_scenario_with_malformed_trace(write_scenario, tmp_path: Path) -> None:
    trace = write(tmp_path, "partition_id,start_s,end_s\n0,0,x\n")
    system = {"mix": MIX, "availability": {"model": "trace", "trace": str(trace)}}
    with pytest.raises(ConfigError) as err:
        load_scenario(write_scenario({"system": system}))
    msg = str(err.value)
    assert "\n" not in msg
    assert "system.availability.trace:" in msg and f"{trace}, line 2" in msg
    missing = {"mix": MIX, "availability": {"model": "trace", "trace": str(tmp_path / "nope.csv")}}
    with pytest.raises(ConfigError, match=r"nope\.csv: no such trace file"):
        load_scenario(write_scenario({"system": missing}))


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        (
            {"mix": [{"share": 1.0, "device": "toaster", "network": "wifi"}]},
            "system.mix.0.device: unknown device profile",
        ),
        (
            {"mix": [{"share": 1.0, "device": "rpi4", "network": "5g"}]},
            "system.mix.0.network: unknown network profile",
        ),
        ({"mix": [{"share": 0.5, "device": "rpi4", "network": "wifi"}]}, "mix shares must sum to 1"),
        ({"mix": MIX, "availability": {"model": "markov", "mean_on_s": 5}}, "requires mean_off_s"),
        ({"mix": MIX, "availability": {"model": "weather"}}, "system.availability.model"),
        ({"mix": MIX, "round": {"policy": "deadline"}}, "deadline_s is required"),
        ({"mix": MIX, "compute": "magic"}, "system.compute"),
    ],
)
def test_system_section_errors(write_scenario, system: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_scenario(write_scenario({"system": system}))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_unknown_profile_lists_the_known_ones(write_scenario) -> None:
    bad = {"mix": [{"share": 1.0, "device": "toaster", "network": "wifi"}]}
    with pytest.raises(ConfigError) as err:
        load_scenario(write_scenario({"system": bad}))
    assert "expected one of: gpu-server, jetson-nano, jetson-orin, rpi4, " in str(err.value)


def test_no_system_section_means_none(write_scenario) -> None:
    assert load_scenario(write_scenario()).system is None
