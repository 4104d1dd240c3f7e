"""Bandwidth/RTT traces: the CSV format, Markov chains, the shipped traces, the shaper replaying one."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import replace

import numpy as np
import pytest

from fedsim.edge.shaper import Shaper, network_profile, sleep_until
from fedsim.edge.traces import (
    DATA,
    HEADER,
    LTE_FADE,
    TRACES,
    LinkState,
    Trace,
    main,
    markov_trace,
    read_trace,
    resolve_trace,
    shipped_recipes,
    write_trace,
)
from fedsim.errors import UserError
from fedsim.system.profiles import NETWORKS, NetworkProfile

HEAD = ",".join(HEADER)
SHIPPED = ("wifi-steady", "lte-fades", "wifi-3g-alternating")


def _trace(name: str = "hand") -> Trace:
    """Rows at 0, 2 and 5 s, the last lasting 1 s: a 6 s loop."""
    states = (LinkState(1.0, 10.0, 20.0), LinkState(2.0, 20.0, 40.0), LinkState(3.0, 30.0, 60.0))
    return Trace(name, (0.0, 2.0, 5.0), states, 1.0)


def _csv(tmp_path, text: str, name: str = "t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _profile(name: str, up: float) -> NetworkProfile:
    return NetworkProfile(name, up, 2 * up, 10 * up, 0.0, 0.0, "test")


# ---------------------------------------------------------------------------- Trace


def test_at_steps_and_wraps_around():
    trace = _trace()
    assert trace.duration == 6.0
    first, second, third = trace.states
    assert [trace.at(t) for t in (0.0, 1.999, 2.0, 4.9, 5.0, 5.999)] == [
        first,
        first,
        second,
        second,
        third,
        third,
    ]
    # t wraps modulo the duration: the trace replays in a loop
    assert [trace.at(t) for t in (6.0, 7.5, 8.0, 11.5, 6000 + 5.2)] == [first, first, second, third, third]
    with pytest.raises(ValueError, match="t must be >= 0"):
        trace.at(-0.1)


def test_mean_is_time_weighted():
    mean = _trace().mean()  # weights 2, 3, 1 s
    assert mean.up_mbps == pytest.approx((2 * 1 + 3 * 2 + 1 * 3) / 6)
    assert mean.down_mbps == pytest.approx((2 * 10 + 3 * 20 + 1 * 30) / 6)
    assert mean.rtt_ms == pytest.approx((2 * 20 + 3 * 40 + 1 * 60) / 6)
    one = Trace("one", (0.0,), (LinkState(4.0, 5.0, 6.0),), 1.0)
    assert one.mean() == LinkState(4.0, 5.0, 6.0)


def test_profile_at_takes_jitter_and_loss_from_base():
    trace = _trace()
    p = trace.profile_at(3.0)
    assert (p.uplink_mbps, p.downlink_mbps, p.rtt_ms, p.jitter_ms, p.loss) == (2.0, 20.0, 40.0, 0.0, 0.0)
    lte = NETWORKS.get("lte")
    q = trace.profile_at(9.0, base=lte)  # 9 s = 3 s into the second loop
    assert (q.uplink_mbps, q.rtt_ms, q.jitter_ms, q.loss) == (2.0, 40.0, lte.jitter_ms, lte.loss)
    assert q.name == "hand"


def test_trace_checks_its_rows():
    state = LinkState(1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="strictly increase"):
        Trace("x", (0.0, 0.0), (state, state), 1.0)
    with pytest.raises(ValueError, match="as many times as states"):
        Trace("x", (0.0, 1.0), (state,), 1.0)
    with pytest.raises(ValueError, match="step_s"):
        Trace("x", (0.0,), (state,), 0.0)


# ---------------------------------------------------------------------------- files


def test_read_a_trace_file(tmp_path):
    path = _csv(tmp_path, f"{HEAD}\n0,18.9,54,10\n0.5,1,2.5,150\n1.5,2,3,0\n\n", name="lab.csv")
    trace = read_trace(path)
    assert trace.name == "lab"
    assert trace.times == (0.0, 0.5, 1.5)
    assert trace.states[0] == LinkState(18.9, 54.0, 10.0)
    assert trace.states[2] == LinkState(2.0, 3.0, 0.0)
    assert trace.step_s == 0.75  # median of the gaps 0.5 and 1.0
    assert trace.duration == 2.25
    assert read_trace(_csv(tmp_path, f"{HEAD}\n0,1,1,1\n")).step_s == 1.0  # one row


def test_write_then_read_round_trips(tmp_path):
    trace = markov_trace(
        "rt", {"a": _profile("a", 3.0), "b": _profile("b", 7.0)}, {"a": 5, "b": 5}, 60, 0.1, 9
    )
    path = write_trace(tmp_path / "rt.csv", trace)
    assert path.read_text().splitlines()[0] == HEAD
    assert read_trace(path) == trace
    # numbers are written with at most 3 decimals; a hand-made trace round-trips once rounded
    hand = Trace("hand", (0.0, 1.0), (LinkState(1234.5678, 0.5, 10.0), LinkState(18.9, 54.0, 0.0)), 1.0)
    text = write_trace(tmp_path / "hand.csv", hand).read_text()
    assert text == f"{HEAD}\n0,1234.568,0.5,10\n1,18.9,54,0\n"
    again = read_trace(tmp_path / "hand.csv")
    assert again.states[0] == LinkState(1234.568, 0.5, 10.0)
    assert write_trace(tmp_path / "hand.csv", again).read_text() == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", ":1: expected the header t_s,up_mbps,down_mbps,rtt_ms, got an empty file"),
        (
            "t,up,down,rtt\n0,1,1,1\n",
            ":1: expected the header t_s,up_mbps,down_mbps,rtt_ms, got 't,up,down,rtt'",
        ),
        (f"{HEAD}\n", ":2: expected at least one row after the header t_s,up_mbps,down_mbps,rtt_ms"),
        (f"{HEAD}\n0,1,1,1\n1,fast,1,1\n", ":3: up_mbps: expected a number, got 'fast'"),
        (f"{HEAD}\n0,1,1,nan\n", ":2: rtt_ms: expected a number, got 'nan'"),
        (f"{HEAD}\n0,1,1\n", ":2: expected 4 numbers (t_s,up_mbps,down_mbps,rtt_ms), got 3 fields"),
        (f"{HEAD}\n1,1,1,1\n", ":2: t_s: expected 0 on the first row, got 1"),
        (f"{HEAD}\n0,1,1,1\n\n2,1,1,1\n2,1,1,1\n", ":5: t_s: expected more than the last (2), got 2"),
        (f"{HEAD}\n0,1,1,1\n1,1,1,1\n0.5,1,1,1\n", ":4: t_s: expected more than the last (1), got 0.5"),
        (f"{HEAD}\n0,1,0,1\n", ":2: down_mbps: expected a bandwidth > 0, got 0"),
        (f"{HEAD}\n0,-2,1,1\n", ":2: up_mbps: expected a bandwidth > 0, got -2"),
        (f"{HEAD}\n0,1,1,1\n1,1,1,-1\n", ":3: rtt_ms: expected a round-trip time >= 0, got -1"),
    ],
)
def test_bad_files_are_one_line_user_errors_naming_the_line(tmp_path, text, message):
    path = _csv(tmp_path, text)
    with pytest.raises(UserError) as err:
        read_trace(path)
    assert str(err.value) == f"{path}{message}"
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as err:
        read_trace(tmp_path / "nope.csv")
    assert (
        str(err.value)
        == f"{tmp_path / 'nope.csv'}: cannot read the trace (no such file); expected a CSV file"
    )


# --------------------------------------------------------------------- Markov chains


def test_markov_is_deterministic_per_seed():
    args = ({"lte": NETWORKS.get("lte"), "lte-fade": LTE_FADE}, {"lte": 40.0, "lte-fade": 6.0}, 300.0, 1.0)
    first, again, other = (markov_trace("m", *args, seed=s) for s in (5, 5, 6))
    assert first == again
    assert first != other
    assert len(first.times) == 300 and first.times[-1] == 299.0 and first.duration == 300.0


def test_markov_rows_scale_the_profiles():
    wifi = NETWORKS.get("wifi")
    trace = markov_trace("w", {"wifi": wifi}, {"wifi": 10.0}, 4000, 1.0, seed=0, variation=0.15)
    up = np.array([s.up_mbps for s in trace.states])
    down = np.array([s.down_mbps for s in trace.states])
    rtt = np.array([s.rtt_ms for s in trace.states])
    # one factor per row shared by up and down (up to rounding), an independent one for RTT
    assert np.allclose(down / up, wifi.downlink_mbps / wifi.uplink_mbps, rtol=2e-3)
    assert np.std(np.log(up / wifi.uplink_mbps)) == pytest.approx(0.15, rel=0.06)
    assert np.std(np.log(rtt / wifi.rtt_ms)) == pytest.approx(0.15, rel=0.06)
    assert np.median(up) == pytest.approx(wifi.uplink_mbps, rel=0.02)
    assert abs(np.corrcoef(np.log(up), np.log(rtt))[0, 1]) < 0.05
    flat = markov_trace("f", {"wifi": wifi}, {"wifi": 10.0}, 5, 1.0, seed=0, variation=0.0)
    assert set(flat.states) == {LinkState(wifi.uplink_mbps, wifi.downlink_mbps, wifi.rtt_ms)}


def test_markov_dwell_times_and_time_fractions():
    profiles = {name: _profile(name, up) for name, up in (("a", 1.0), ("b", 2.0), ("c", 3.0))}
    dwell = {"a": 10.0, "b": 20.0, "c": 30.0}
    trace = markov_trace("long", profiles, dwell, 60_000, 1.0, seed=11, variation=0.0)
    labels = [{1.0: "a", 2.0: "b", 3.0: "c"}[s.up_mbps] for s in trace.states]
    assert labels[0] == "a"  # starts in the first state by default
    # the jump chain is uniform over the others, so time in a state is proportional to its dwell
    for name, share in (("a", 1 / 6), ("b", 2 / 6), ("c", 3 / 6)):
        assert labels.count(name) / len(labels) == pytest.approx(share, abs=0.03)
    runs: dict[str, list[int]] = {n: [] for n in dwell}
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            runs[labels[start]].append(i - start)
            start = i
    for name, mean_s in dwell.items():
        assert np.mean(runs[name][:-1]) == pytest.approx(mean_s, rel=0.15)
    assert (
        markov_trace("s", profiles, dwell, 10, 1.0, seed=1, start="c", variation=0.0).states[0].up_mbps == 3.0
    )


def test_markov_bad_arguments():
    wifi = NETWORKS.get("wifi")
    with pytest.raises(UserError, match="dwell_s: expected seconds >= step_s"):
        markov_trace("x", {"wifi": wifi}, {}, 10, 1.0, seed=0)
    with pytest.raises(UserError, match="dwell_s"):
        markov_trace("x", {"wifi": wifi}, {"wifi": 0.5}, 10, 1.0, seed=0)
    with pytest.raises(UserError, match="start: expected one of wifi, got 'lte'"):
        markov_trace("x", {"wifi": wifi}, {"wifi": 5.0}, 10, 1.0, seed=0, start="lte")
    with pytest.raises(UserError, match="duration_s >= step_s > 0"):
        markov_trace("x", {"wifi": wifi}, {"wifi": 5.0}, 0.5, 1.0, seed=0)


# -------------------------------------------------------------------- shipped traces


def test_shipped_traces_are_listed_and_regenerate_exactly(tmp_path):
    assert tuple(TRACES) == SHIPPED
    assert set(shipped_recipes()) == set(SHIPPED)
    for name, recipe in shipped_recipes().items():
        assert TRACES[name] == DATA / f"{name}.csv" and TRACES[name].is_file()
        shipped = read_trace(TRACES[name])
        assert markov_trace(name, **recipe) == shipped
        assert shipped.duration == 300.0 and shipped.step_s == 1.0 and len(shipped.times) == 300
        made = write_trace(tmp_path / f"{name}.csv", markov_trace(name, **recipe))
        assert made.read_bytes() == TRACES[name].read_bytes()
    assert main([str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{n}.csv" for n in SHIPPED)
    assert (tmp_path / "out" / "lte-fades.csv").read_bytes() == TRACES["lte-fades"].read_bytes()


def test_shipped_recipes_and_their_character():
    recipes = shipped_recipes()
    assert recipes["lte-fades"]["dwell_s"] == {"lte": 40.0, "lte-fade": 6.0}
    assert recipes["lte-fades"]["states"]["lte-fade"] is LTE_FADE and "lte-fade" not in NETWORKS
    assert recipes["wifi-3g-alternating"]["dwell_s"] == {"wifi": 30.0, "3g": 30.0}
    assert list(recipes["wifi-steady"]["states"]) == ["wifi"]
    steady = resolve_trace("wifi-steady").mean()
    assert steady.up_mbps == pytest.approx(NETWORKS.get("wifi").uplink_mbps, rel=0.05)
    fades = [s.up_mbps < 2.0 for s in resolve_trace("lte-fades").states]
    assert 0.03 < sum(fades) / len(fades) < 0.3  # mostly LTE, with fades
    assert sum(a != b for a, b in itertools.pairwise(fades)) >= 4
    slow = [s.up_mbps < 5.0 for s in resolve_trace("wifi-3g-alternating").states]
    assert 0.25 < sum(slow) / len(slow) < 0.75
    assert sum(a != b for a, b in itertools.pairwise(slow)) >= 4


def test_resolve_trace(tmp_path):
    assert resolve_trace("lte-fades") == read_trace(TRACES["lte-fades"])
    path = _csv(tmp_path, f"{HEAD}\n0,1,2,3\n", name="mine.csv")
    assert resolve_trace(str(path)).states == (LinkState(1.0, 2.0, 3.0),)
    for value in ("satellite", str(tmp_path / "missing.csv")):
        with pytest.raises(UserError) as err:
            resolve_trace(value)
        assert str(err.value).startswith(f"unknown trace {value!r}; expected one of: {', '.join(SHIPPED)}, ")
        assert "\n" not in str(err.value)


# --------------------------------------------------------------- the shaper replaying


def _two_phase(phase_s: float = 0.5) -> Trace:
    """8 Mbit/s up (16 down), RTT 10 ms; then 1 Mbit/s up (2 down), RTT 20 ms."""
    return Trace("two", (0.0, phase_s), (LinkState(8.0, 16.0, 10.0), LinkState(1.0, 2.0, 20.0)), phase_s)


def _timed(call, nbytes: int) -> tuple[float, float]:
    start = time.perf_counter()
    planned = call(nbytes)
    return planned, time.perf_counter() - start


def test_shaper_follows_the_trace_in_each_phase_and_loops():
    nbytes = 20_000
    shaper = Shaper(None, trace=_two_phase())
    fast_up, fast_down = nbytes * 8 / 8e6 + 0.005, nbytes * 8 / 16e6 + 0.005  # 25 ms, 15 ms
    slow_up, slow_down = nbytes * 8 / 1e6 + 0.010, nbytes * 8 / 2e6 + 0.010  # 170 ms, 90 ms
    assert shaper.expected(nbytes, "uplink", t=0.2) == pytest.approx(fast_up)
    assert shaper.expected(nbytes, "downlink", t=0.7) == pytest.approx(slow_down)
    assert shaper.expected(nbytes, "uplink", t=1.6) == pytest.approx(slow_up)  # second loop
    measured = []
    for at, direction, expected in [
        (0.0, "uplink", fast_up),
        (0.05, "downlink", fast_down),
        (0.55, "uplink", slow_up),
        (0.75, "downlink", slow_down),
        (1.05, "uplink", fast_up),  # the trace replays
    ]:
        sleep_until(shaper.clock_start + at)
        planned, wall = _timed(getattr(shaper, direction), nbytes)
        measured.append((planned, wall, expected))
    for planned, wall, expected in measured:
        assert planned == pytest.approx(expected, rel=1e-9)
        assert wall == pytest.approx(expected, rel=0.05, abs=0.002)
        assert wall >= expected


def test_a_queued_transfer_uses_the_row_in_force_when_it_starts():
    shaper = Shaper(None, trace=_two_phase(), clock_start=100.0)
    link = shaper._links["uplink"]
    _, first = link.reserve(400_000, now=100.1)  # 0.4 s at 8 Mbit/s: busy until 100.5
    assert first == pytest.approx(0.4 + 0.005)
    _, second = link.reserve(1_000, now=100.2)  # waits 0.3 s, starts in the 1 Mbit/s row
    assert second == pytest.approx(0.3 + 1_000 * 8 / 1e6 + 0.010)
    early = Shaper(None, trace=_two_phase(), clock_start=100.0)._links["uplink"]
    assert early.reserve(1_000, now=50.0)[1] == pytest.approx(1_000 * 8 / 8e6 + 0.005)  # before: row 0


def test_jitter_and_loss_still_come_from_the_profile():
    spec = {"uplink_mbps": 1000, "downlink_mbps": 1000, "rtt_ms": 2, "jitter_ms": 1.0, "loss": 0.1}
    profile = network_profile(spec)
    fast = Trace("fast", (0.0,), (LinkState(1000.0, 1000.0, 2.0),), 600.0)
    sizes = [5_000, 30_000, 12_345, 64_000]

    def planned(shaper: Shaper) -> list[float]:
        return [f(n) for n in sizes for f in (shaper.uplink, shaper.downlink)]

    fixed = planned(Shaper(profile, seed=7))
    traced = planned(Shaper(replace(profile, uplink_mbps=1.0, rtt_ms=500.0), seed=7, trace=fast))
    assert traced == fixed  # same draws; the trace's rate and RTT replace the profile's
    plain = planned(Shaper(None, seed=7, trace=fast))  # no profile: no jitter, no loss
    assert plain == [pytest.approx(n * 8 / 1e9 + 0.001) for n in sizes for _ in range(2)]
    assert all(not math.isclose(a, b) for a, b in zip(traced, plain, strict=True))


def test_describe_names_the_trace():
    trace = resolve_trace("wifi-3g-alternating")
    d = Shaper(NETWORKS.get("lte"), seed=3, trace=trace).describe()
    assert d["name"] == "trace:wifi-3g-alternating" and d["trace"] == "wifi-3g-alternating"
    assert d["trace_duration_s"] == 300.0 and d["trace_rows"] == 300
    assert d["mean_up_mbps"] == pytest.approx(trace.mean().up_mbps)
    assert (d["profile"], d["jitter_ms"], d["loss"], d["seed"], d["mtu"]) == ("lte", 10.0, 0.005, 3, 1500)
    assert "replayed in a loop from trace wifi-3g-alternating (300 s" in d["method"]
    bare = Shaper(None, trace=trace).describe()
    assert (bare["profile"], bare["jitter_ms"], bare["loss"]) == (None, 0.0, 0.0)
    assert Shaper(None).describe()["method"] == "no shaping"  # unchanged without a trace
