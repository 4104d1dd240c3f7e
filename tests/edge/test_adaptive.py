"""The adaptive worker: its link estimate, its choice per request, probing, the bench's comparison,
and real runs against a tail server (one that must switch with the link)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fedsim.config import Bench
from fedsim.edge.bench import configurations
from fedsim.edge.bench_compare import compare_adaptive
from fedsim.edge.proto import pb
from fedsim.edge.worker import Worker, WorkerConfig
from fedsim.edge.worker.adaptive import (
    HALF_LIFE_S,
    AdaptivePolicy,
    Ewma,
    LinkEstimate,
    options_for,
)
from fedsim.edge.worker.connection import padded_info_request
from fedsim.errors import UserError
from fedsim.system.profiles import DEVICES

PAD = 8192


def probe_times(up_mbps: float, rtt_ms: float) -> tuple[float, float]:
    """What an empty and a padded probe take on a link (replies ignored)."""
    return rtt_ms, rtt_ms + PAD * 8 / (up_mbps * 1e3)


def estimate(up_mbps: float, rtt_ms: float) -> LinkEstimate:
    link = LinkEstimate()
    link.from_probe(0.0, *probe_times(up_mbps, rtt_ms), PAD, 0)
    return link


def test_ewma_weights_a_sample_by_the_time_since_the_last() -> None:
    e = Ewma()
    e.add(10.0, 0.0)
    assert e.value == 10.0
    e.add(20.0, HALF_LIFE_S)  # one half-life later: half weight
    assert e.value == pytest.approx(15.0)
    e.add(15.0 + 100.0, HALF_LIFE_S)  # at the same time: no weight
    assert e.value == pytest.approx(15.0)
    e.add(0.0, 11 * HALF_LIFE_S)  # after a long gap: nearly alone
    assert e.value == pytest.approx(15.0 * 2**-10)


def test_a_probe_measures_rtt_and_rate() -> None:
    link = estimate(18.9, 10.0).link()
    assert link.up_mbps == pytest.approx(18.9)
    assert link.rtt_ms == pytest.approx(10.0)


def test_a_request_moves_rtt_and_transfer_by_one_factor_without_drift() -> None:
    link = estimate(10.0, 10.0)
    nbytes = 10_000  # 8 ms at 10 Mbit/s: predicted 18 ms
    link.from_request(HALF_LIFE_S, nbytes, 0, 36.0)  # twice as slow, one half-life later
    assert link.rtt_ms.value == pytest.approx(10.0 * 1.5)
    assert link.transfer_ms(nbytes, 0) == pytest.approx(8.0 * 1.5)
    assert link.sampled_at == HALF_LIFE_S
    # samples that scatter around the truth leave the split between RTT and transfer as it was
    ratio = link.rtt_ms.value / link.transfer_ms(nbytes, 0)
    for i, factor in enumerate((2.0, 0.5) * 20):
        total = link.rtt_ms.value + link.transfer_ms(nbytes, 0)
        link.from_request(2.0 + 0.3 * i, nbytes, 0, factor * total)
        assert link.rtt_ms.value / link.transfer_ms(nbytes, 0) == pytest.approx(ratio)


def measured_policy(objective: str = "latency") -> AdaptivePolicy:
    """A policy for a Pi 4 whose options' costs are as the ResNet-18 bench measured them."""
    policy = AdaptivePolicy(options_for([3]), DEVICES.get("rpi4"), objective, probe_s=5.0)
    costs = {  # device ms, device mJ, server ms, bytes up, bytes down
        "local": (101.7, 647.0, 0.0, 0, 0),
        "offload": (2.0, 12.0, 1.0, 8705, 20),
        "split-C3": (30.0, 190.0, 0.5, 2528, 20),
    }
    for option in policy.options:
        dev_ms, dev_mj, srv, up, down = costs[option.name]
        option.device_ms.add(dev_ms)
        option.device_mj.add(dev_mj)
        if option.remote:
            option.server_ms.add(srv)
            option.up_bytes.add(up)
            option.down_bytes.add(down)
    return policy


@pytest.mark.parametrize(("up_mbps", "rtt_ms", "expected"), [(18.9, 10.0, "offload"), (1.1, 150.0, "local")])
def test_the_choice_follows_the_link(up_mbps: float, rtt_ms: float, expected: str) -> None:
    policy = measured_policy()
    policy.link = estimate(up_mbps, rtt_ms)
    option, why = policy.choose(t=0.0)
    assert option.name == expected
    assert why["objective"] == "latency"
    assert why["up_mbps"] == pytest.approx(up_mbps, rel=1e-3)
    assert why["rtt_ms"] == pytest.approx(rtt_ms, abs=0.01)
    predicted = why["predicted"]
    assert set(predicted) == {"local", "offload", "split-C3"}
    assert min(predicted, key=lambda k: predicted[k][0]) == expected
    assert predicted["local"] == [101.7, 647.0]  # local does not use the link
    offload_ms = 2.0 + 8705 * 8 / (up_mbps * 1e3) + rtt_ms + 1.0 + 20 * 8 / (up_mbps * 1e3)
    assert predicted["offload"][0] == pytest.approx(offload_ms, abs=0.2)


def test_the_energy_objective_minimises_energy() -> None:
    policy = measured_policy("energy")
    policy.link = estimate(1.4, 20.0)  # the split is fastest here, offloading the most frugal
    option, why = policy.choose(t=0.0)
    predicted = why["predicted"]
    assert option.name == min(predicted, key=lambda k: predicted[k][1]) == "offload"
    assert min(predicted, key=lambda k: predicted[k][0]) == "split-C3"


def test_an_unmeasured_link_leaves_only_local() -> None:
    policy = measured_policy()
    option, why = policy.choose(t=0.0)
    assert option.name == "local" and set(why["predicted"]) == {"local"}


def test_a_probe_is_due_after_probe_s_without_a_remote_sample() -> None:
    policy = measured_policy()
    assert policy.probe_due(0.0)  # never sampled
    policy.probed(10.0, *probe_times(1.1, 150.0), 0)
    assert policy.probes == 1 and policy.link.sampled_at == 10.0
    assert not policy.probe_due(14.9) and policy.probe_due(15.0)
    policy.link.from_request(20.0, 8705, 20, 200.0)
    assert not policy.probe_due(24.9) and policy.probe_due(25.0)


@pytest.mark.parametrize(
    ("objective", "up_mbps", "rtt_ms", "pad", "expected"),
    [
        ("energy", 1.1, 150.0, PAD, "offload"),  # 3G: a request costs less than two RTTs of probing
        ("energy", 0.1, 5.0, 64, None),  # short RTTs, a slow link: the calls cost less
        ("latency", 1.1, 150.0, PAD, None),  # probe calls delay no request
    ],
)
def test_a_due_probe_is_the_request_itself_where_that_saves_energy(
    objective: str, up_mbps: float, rtt_ms: float, pad: int, expected: str | None
) -> None:
    policy = measured_policy(objective)
    policy.probe_bytes = pad
    policy.link = estimate(up_mbps, rtt_ms)
    option, why = policy.choose(t=10.0)  # the estimate is from t = 0: a probe is due
    assert (option.name, why.get("probe")) == ((expected, "request") if expected else ("local", None))
    predicted = why["predicted"]
    frugal = min((k for k in predicted if k != "local"), key=lambda k: predicted[k][1])
    extra = predicted[frugal][1] - predicted["local"][1]
    calls = DEVICES.get("rpi4").transmit_w * (2 * rtt_ms + pad * 8 / (up_mbps * 1e3))
    assert policy.probe_calls_mj() == pytest.approx(calls, rel=1e-3)
    assert extra > 0  # local is the choice on its merits
    if objective == "energy":
        assert (extra < calls) == (expected is not None)
    policy.link.sampled_at = 10.0  # just sampled: no probe due, local as predicted
    assert policy.choose(t=11.0)[0].name == "local"


def test_a_failed_request_teaches_nothing() -> None:
    policy = measured_policy()
    policy.link = estimate(18.9, 10.0)
    offload = policy.options[1]
    before = (offload.device_ms.value, policy.link.rtt_ms.value, policy.link.sampled_at)
    policy.observe(offload, {"ok": False}, 3.0)
    assert (offload.device_ms.value, policy.link.rtt_ms.value, policy.link.sampled_at) == before


def test_probe_padding_is_an_unknown_field_the_server_parses() -> None:
    assert padded_info_request(0) == b""
    for n in (1, 127, 128, PAD):
        raw = padded_info_request(n)
        assert len(raw) > n
        assert pb.InfoRequest.FromString(raw).ByteSize() == len(raw)


def summary(mode: str, network: str, ms: float, mj: float, channels: int | None = None, **extra) -> dict:
    return {
        "mode": mode,
        "device": "rpi4",
        "network": network,
        "channels": channels,
        "latency_ms": {"total": {"mean": ms}},
        "energy_J": {"total": mj / 1e3},
        **extra,
    }


def test_adaptive_is_compared_with_each_fixed_mode_on_its_link_and_local() -> None:
    summaries = [
        summary("local", "none", 100.0, 600.0),
        summary("offload", "trace-a", 110.0, 400.0),
        summary("split", "trace-a", 105.0, 420.0, channels=3),
        summary("offload", "trace-b", 10.0, 50.0),  # another link: not compared
        summary("adaptive", "trace-a", 60.0, 380.0, config={"objective": "latency"}, choices={"local": 2}),
        summary("adaptive", "trace-a", 70.0, 410.0, config={"objective": "energy"}, probes=4),
    ]
    latency, energy = compare_adaptive(summaries)
    assert set(latency["fixed"]) == {"local", "offload", "split-C3"}
    assert latency["best_fixed"] == "local" and latency["vs_best_fixed"] == pytest.approx(0.6)
    assert latency["beats_every_fixed"] and latency["choices"] == {"local": 2}
    assert energy["best_fixed"] == "offload" and energy["vs_best_fixed"] == pytest.approx(410 / 400)
    assert not energy["beats_every_fixed"] and energy["probes"] == 4


def bench_of(**changes) -> Bench:
    spec = {"name": "t", "model": {"onnx": "x"}, "devices": ["rpi4"], **changes}
    return Bench.model_validate(spec)


def test_bench_runs_each_trace_once_through_and_adaptive_per_objective(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("t_s,up_mbps,down_mbps,rtt_ms\n0,10,10,10\n4,1,1,100\n")  # 8 s: 4 s a row
    bench = bench_of(
        modes=["local", "offload", "adaptive"],
        networks=["wifi"],
        traces=[str(trace)],
        trace_interval_s=0.5,
        objectives=["latency", "energy"],
        requests=7,
    )
    grid = configurations(bench, [3])
    labels = [
        WorkerConfig(
            mode=c["mode"],
            network=c["network"],
            trace=c.get("trace"),
            objective=c.get("objective", "latency"),
        ).label(c["channels"])
        for c in grid
    ]
    assert labels == [
        "local-this-host-none",
        "offload-this-host-wifi",
        "adaptive-this-host-wifi-latency",
        "adaptive-this-host-wifi-energy",
        "offload-this-host-trace-t",
        "adaptive-this-host-trace-t-latency",
        "adaptive-this-host-trace-t-energy",
    ]
    on_trace = [c for c in grid if c.get("trace")]
    assert {c["requests"] for c in on_trace} == {16} and {c["interval_s"] for c in on_trace} == {0.5}
    assert {c["requests"] for c in grid if not c.get("trace")} == {7}


def test_bench_link_errors() -> None:
    with pytest.raises(ValueError, match="remote modes need a link"):
        bench_of(modes=["adaptive"], networks=[])
    assert bench_of(modes=["local"], networks=[]).networks == []
    with pytest.raises(UserError, match="unknown trace 'nowhere'"):
        configurations(bench_of(traces=["nowhere"]), [3])


def test_worker_argument_errors() -> None:
    with pytest.raises(UserError, match="needs a trace"):
        Worker(WorkerConfig(mode="offload", server="127.0.0.1:1", interval_s=1.0))
    with pytest.raises(UserError, match="mode adaptive needs --server"):
        Worker(WorkerConfig(mode="adaptive", model_dir=Path("x")))


# ------------------------------------------------------------------ against a real server


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_adaptive_worker_measures_every_option_and_explains_each_choice(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    """The tiny model computes in well under a millisecond: local wins on any link, and the worker
    keeps probing (with backoff) in case the link gets better."""
    from fedsim.edge.server import ServerConfig, TailServer

    server = TailServer(tiny_onnx, ServerConfig(port=0, workers=2))
    server.start()
    try:
        config = WorkerConfig(
            mode="adaptive",
            server=f"127.0.0.1:{server.port}",
            device="rpi4",
            network="wifi",
            requests=12,
            warmup=1,
            probe_s=0.001,  # due after every local request
        )
        worker = Worker(config)
        try:
            summary = worker.run(tmp_path / config.label(None))
        finally:
            worker.close()
    finally:
        server.stop()
    assert summary["label"] == "adaptive-rpi4-wifi-latency"
    assert summary["ok"] == 12 and summary["choices"] == {"local": 12}
    got = rows(tmp_path / summary["label"])
    for row in got:
        assert row["mode"] == "local" and row["network_ms"] == 0.0
        assert set(row["why"]["predicted"]) == {"local", "offload", "split-C1", "split-C3"}
        assert row["why"]["rtt_ms"] > 5.0  # Wi-Fi's 10 ms RTT, as probed
    probed = [r for r in got if r.get("probes")]
    assert summary["probes"] == len(probed) >= 2
    for row in probed:
        assert row["probe_ms"] > 2 * 5.0  # two calls of about one RTT each
        assert row["energy_J"]["probe"] > 0
        assert row["energy_J"]["total"] == pytest.approx(
            sum(v for k, v in row["energy_J"].items() if k != "total")
        )
    assert summary["energy_J"]["probe"] > 0


def write_two_phase_trace(path: Path, phase_s: float, cycles: int) -> Path:
    """A fast link (200 Mbit/s, 1 ms) and a slow one (2 Mbit/s, 100 ms), ``phase_s`` each, in turn."""
    lines = ["t_s,up_mbps,down_mbps,rtt_ms"]
    for k in range(2 * cycles):
        fast = k % 2 == 0
        lines.append(f"{k * phase_s:g},{200 if fast else 2},{200 if fast else 2},{1 if fast else 100}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_adaptive_bench_follows_a_changing_link(tmp_path: Path) -> None:
    """A Pi 4 with ResNet-18 at 96x96 (about 18 ms locally): offloading wins on the fast phases,
    local computing on the slow ones, and the adaptive worker switches with them."""
    from fedsim.edge.bench import run_bench

    phase_s, interval = 10.0, 0.5
    trace = write_two_phase_trace(tmp_path / "two-phase.csv", phase_s, cycles=2)
    spec = {
        "name": "adaptive",
        "model": {"timing": {"arch": "resnet18", "image_size": 96, "split": "layer2", "channels": [3]}},
        "modes": ["local", "offload", "adaptive"],
        "devices": ["rpi4"],
        "networks": [],
        "traces": [str(trace)],
        "trace_interval_s": interval,
        "requests": 10,
        "warmup": 2,
        "probe_s": 3.0,
        "output": {"dir": str(tmp_path / "runs")},
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(spec))
    run, summary = run_bench(path, log=lambda line: None)
    assert summary["status"] == "completed"
    label = "adaptive-rpi4-trace-two-phase-latency"
    got = rows(run / "workers" / label)
    assert len(got) == 4 * phase_s / interval
    assert [r["trace_t_s"] for r in got] == pytest.approx([i * interval for i in range(len(got))], abs=0.05)
    per_phase = int(phase_s / interval)
    settled = {True: [], False: []}  # fast phase? -> choices in the second half of the phase
    for i, row in enumerate(got):
        if i % per_phase >= per_phase // 2:
            settled[(i // per_phase) % 2 == 0].append(row["mode"])
    assert settled[True].count("offload") >= 0.75 * len(settled[True]), settled
    assert settled[False].count("local") >= 0.75 * len(settled[False]), settled
    (row,) = summary["adaptive"]
    assert row["network"] == "trace-two-phase" and set(row["fixed"]) == {"local", "offload"}
    assert set(row["choices"]) == {"local", "offload"}
