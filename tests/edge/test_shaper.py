"""The network shaper: t = S*8/r + rtt/2 on the wall clock, seeded jitter and loss, a shared link."""

from __future__ import annotations

import statistics
import sys
import threading
import time
from dataclasses import replace

import pytest

from fedsim.edge.shaper import (
    Shaper,
    netns_unavailable,
    network_profile,
    run_in_netns,
    tc_tbf_commands,
)
from fedsim.errors import UserError
from fedsim.system.profiles import NETWORKS

PAYLOADS = (1_000, 10_000, 100_000, 1_000_000)
LINK_20M = {"uplink_mbps": 20, "downlink_mbps": 40, "rtt_ms": 20}


def _steady(name: str) -> dict:
    """A registered profile's rates and RTT, with jitter and loss off."""
    p = NETWORKS.get(name)
    return {"uplink_mbps": p.uplink_mbps, "downlink_mbps": p.downlink_mbps, "rtt_ms": p.rtt_ms, "name": name}


def _median_wall(shaper: Shaper, nbytes: int, repeats: int) -> tuple[float, list[float]]:
    """Median wall time of ``repeats`` uplink transfers, and the planned times."""
    walls, planned = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        planned.append(shaper.uplink(nbytes))
        walls.append(time.perf_counter() - start)
    return statistics.median(walls), planned


# ------------------------------------------------------------------------- profiles


def test_registered_names_and_no_shaping():
    assert network_profile("lte") is NETWORKS.get("lte")
    assert network_profile("wifi").uplink_mbps == pytest.approx(18.9)
    for spec in (None, "none", "loopback", "NONE"):
        assert network_profile(spec) is None


def test_custom_mapping_defaults():
    p = network_profile({"uplink_mbps": 5, "downlink_mbps": 10, "rtt_ms": 30})
    assert (p.name, p.source) == ("custom", "user-defined")
    assert (p.uplink_mbps, p.downlink_mbps, p.rtt_ms, p.jitter_ms, p.loss) == (5.0, 10.0, 30.0, 0.0, 0.0)
    assert network_profile({**LINK_20M, "jitter_ms": 3, "loss": 0.01, "name": "lab"}).name == "lab"


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("satellite", "unknown network 'satellite'; expected one of: 3g, lte, "),  # + registered ones
        ({"uplink_mbps": 5, "rtt_ms": 1}, "network: downlink_mbps: required key is missing"),
        ({**LINK_20M, "bandwidth": 3}, "network: bandwidth: unknown key; expected one of: downlink_mbps"),
        ({**LINK_20M, "uplink_mbps": 0}, "network: uplink_mbps: Input should be greater than 0 (got 0)"),
        ({**LINK_20M, "downlink_mbps": "fast"}, "network: downlink_mbps: Input should be a valid number"),
        ({**LINK_20M, "rtt_ms": -1}, "network: rtt_ms: Input should be greater than or equal to 0 (got -1)"),
        ({**LINK_20M, "jitter_ms": float("nan")}, "network: jitter_ms: Input should be a finite number"),
        ({**LINK_20M, "loss": 1.0}, "network: loss: Input should be less than 1 (got 1.0)"),
        ({**LINK_20M, "loss": True}, "network: loss: Input should be less than 1 (got True)"),
        ({**LINK_20M, "name": ""}, "network: name: String should have at least 1 character"),
        (12, "network: expected a profile name or a mapping, got int"),
    ],
)
def test_bad_specs_are_one_line_user_errors(spec, fragment):
    with pytest.raises(UserError) as err:
        network_profile(spec)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ wall-clock accuracy


@pytest.mark.parametrize("nbytes", PAYLOADS)
def test_uplink_wall_time_within_10_percent_of_s_over_r_plus_d(nbytes):
    shaper = Shaper(network_profile(LINK_20M))
    expected = nbytes * 8 / 20e6 + 0.010
    assert shaper.expected(nbytes, "uplink") == pytest.approx(expected)
    assert shaper.expected(nbytes, "downlink") == pytest.approx(nbytes * 8 / 40e6 + 0.010)
    wall, planned = _median_wall(shaper, nbytes, repeats=5 if nbytes < 1_000_000 else 3)
    assert planned == [pytest.approx(expected)] * len(planned)
    assert wall == pytest.approx(expected, rel=0.10)
    assert wall >= expected  # never early


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wifi", "lte"])
@pytest.mark.parametrize("nbytes", PAYLOADS)
def test_profiles_without_jitter_and_loss_within_10_percent(name, nbytes):
    shaper = Shaper(network_profile(_steady(name)))
    p = NETWORKS.get(name)
    expected = nbytes * 8 / (p.uplink_mbps * 1e6) + p.rtt_ms / 2000
    assert shaper.expected(nbytes, "uplink") == pytest.approx(expected)
    wall, _ = _median_wall(shaper, nbytes, repeats=3 if nbytes < 1_000_000 else 1)
    assert wall == pytest.approx(expected, rel=0.10)


def test_downlink_uses_downlink_rate():
    shaper = Shaper(network_profile(LINK_20M))
    start = time.perf_counter()
    planned = shaper.downlink(200_000)
    wall = time.perf_counter() - start
    assert planned == pytest.approx(200_000 * 8 / 40e6 + 0.010)
    assert wall == pytest.approx(planned, rel=0.10)


def test_no_profile_does_not_sleep():
    shaper = Shaper(None)
    start = time.perf_counter()
    assert shaper.uplink(10**9) == 0.0 and shaper.downlink(10**9) == 0.0
    assert time.perf_counter() - start < 0.05
    assert shaper.describe()["method"] == "no shaping"


# ------------------------------------------------------------- jitter, loss, sharing


def _fast_lossy(seed: int, loss: float = 0.1, jitter_ms: float = 1.0) -> Shaper:
    spec = {"uplink_mbps": 1000, "downlink_mbps": 1000, "rtt_ms": 2, "jitter_ms": jitter_ms, "loss": loss}
    return Shaper(network_profile(spec), seed=seed)


def test_jitter_and_loss_are_deterministic_per_seed():
    sizes = [5_000, 1_000, 30_000, 12_345, 500, 64_000]

    def sequence(seed: int) -> list[float]:
        shaper = _fast_lossy(seed)
        out = []
        for n in sizes:
            out.append(shaper.uplink(n))
            out.append(shaper.downlink(n))
        return out

    first, again, other = sequence(7), sequence(7), sequence(8)
    assert first == again
    assert first != other
    # jitter moves the one-way delay (1 ms) within +- 1 ms; loss only adds time
    up = first[0::2]
    floor = [n * 8 / 1e9 for n in sizes]
    assert all(f <= t <= f * 3 + 0.002 for f, t in zip(floor, up, strict=True))
    assert len(set(round(t - f, 9) for f, t in zip(floor, up, strict=True))) == len(sizes)


def test_uplink_and_downlink_draws_are_independent_streams():
    a, b = _fast_lossy(3), _fast_lossy(3)
    ups_a = [a.uplink(2_000) for _ in range(4)]
    ups_b = []
    for _ in range(4):
        b.downlink(2_000)  # interleaved downlink traffic does not change the uplink's draws
        ups_b.append(b.uplink(2_000))
    assert ups_a == ups_b


def test_loss_serialises_about_one_over_one_minus_loss():
    loss, nbytes, rounds = 0.2, 1_500_000, 8  # 1000 packets per transfer
    shaper = _fast_lossy(seed=1, loss=loss, jitter_ms=0.0)
    serialise = [shaper.uplink(nbytes) - 0.001 for _ in range(rounds)]
    ratio = statistics.mean(serialise) / (nbytes * 8 / 1e9)
    assert ratio == pytest.approx(1 / (1 - loss), rel=0.03)
    assert min(serialise) > nbytes * 8 / 1e9  # 1000 packets at 20% loss: some are always lost
    lossless = _fast_lossy(seed=1, loss=0.0, jitter_ms=0.0)
    assert lossless.uplink(nbytes) == pytest.approx(nbytes * 8 / 1e9 + 0.001)


def test_two_threads_share_the_link():
    nbytes = 250_000  # 100 ms each at 20 Mbit/s
    shaper = Shaper(network_profile(LINK_20M))
    serialise, delay = nbytes * 8 / 20e6, 0.010
    barrier = threading.Barrier(2)
    planned, finished = [], []
    start = time.perf_counter()

    def send() -> None:
        barrier.wait()
        planned.append(shaper.uplink(nbytes))
        finished.append(time.perf_counter() - start)

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    planned.sort()
    assert planned[0] == pytest.approx(serialise + delay, rel=0.05)
    assert planned[1] == pytest.approx(2 * serialise + delay, rel=0.05)
    assert max(finished) == pytest.approx(2 * serialise + delay, rel=0.10)
    # after the link drains, a new transfer does not queue
    assert shaper.uplink(nbytes) == pytest.approx(serialise + delay)


def test_describe_for_result_files():
    shaper = Shaper(network_profile("lte"), seed=4)
    d = shaper.describe()
    assert d["name"] == "lte" and d["uplink_mbps"] == 5.85 and d["loss"] == 0.005
    assert d["seed"] == 4 and d["mtu"] == 1500
    assert d["method"].startswith("application-level token bucket")


def test_bad_arguments():
    shaper = Shaper(network_profile(LINK_20M))
    with pytest.raises(ValueError, match="direction"):
        shaper.expected(10, "sideways")
    with pytest.raises(ValueError, match="nbytes"):
        shaper.uplink(-1)
    with pytest.raises(UserError, match="mtu: expected a positive integer"):
        Shaper(None, mtu=0)


# ---------------------------------------------------------------------- tc tbf path


def test_tc_tbf_command():
    profile = network_profile(LINK_20M)
    (cmd,) = tc_tbf_commands(profile, dev="lo")
    assert cmd[:9] == ["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "20000kbit"]
    burst = int(cmd[cmd.index("burst") + 1])
    assert burst >= 1500 + 14
    assert cmd[cmd.index("latency") + 1].endswith("ms")
    (down,) = tc_tbf_commands(profile, dev="eth0", direction="downlink")
    assert "40000kbit" in down and "eth0" in down
    fast = replace(profile, uplink_mbps=1000.0)
    assert int(tc_tbf_commands(fast)[0][10]) >= 1000e6 / 8 / 1000  # about 1 ms of tokens


_TCP_TRANSFER = """
import socket, statistics, sys, threading, time
n, reps = int(sys.argv[1]), int(sys.argv[2])
srv = socket.create_server(("127.0.0.1", 0))
port = srv.getsockname()[1]

def serve():
    for _ in range(reps):
        conn, _ = srv.accept()
        got = 0
        while got < n:
            got += len(conn.recv(65536))
        conn.sendall(b"k")
        conn.close()

threading.Thread(target=serve, daemon=True).start()
times = []
for _ in range(reps):
    c = socket.create_connection(("127.0.0.1", port))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = time.perf_counter()
    c.sendall(b"x" * n)
    assert c.recv(1) == b"k"
    times.append(time.perf_counter() - t)
    c.close()
print(statistics.median(times))
"""


@pytest.mark.slow
def test_tcp_transfer_in_shaped_netns_matches_s_over_r():
    reason = netns_unavailable()
    if reason:
        pytest.skip(f"tc tbf path unavailable: {reason}")
    nbytes = 50_000
    profile = network_profile(LINK_20M)
    done = run_in_netns([sys.executable, "-c", _TCP_TRANSFER, str(nbytes), "5"], profile, timeout=60)
    assert done.returncode == 0, done.stderr
    measured = float(done.stdout.strip())
    assert measured == pytest.approx(nbytes * 8 / 20e6, rel=0.20)


@pytest.mark.slow
def test_netns_setup_failure_is_a_user_error_and_exit_status_passes_through():
    reason = netns_unavailable()
    if reason:
        pytest.skip(f"tc tbf path unavailable: {reason}")
    profile = network_profile(LINK_20M)
    with pytest.raises(UserError, match=r"cannot shape loopback in a network namespace with tc tbf: .*mtu"):
        run_in_netns(["true"], profile, mtu=-5)
    done = run_in_netns(["sh", "-c", "tc qdisc show dev lo; exit 3"], profile)
    assert done.returncode == 3
    assert "tbf" in done.stdout and "rate 20Mbit" in done.stdout
