"""``fedsim edge plan``: the cost model, the Pareto front, the choice, planning over a trace."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedsim.edge.plan import (
    RESNET18_FLOPS,
    Candidate,
    FixedLink,
    Machines,
    choose,
    mark_pareto,
    plan_over_trace,
    predict,
    resnet_candidates,
)
from fedsim.errors import UserError
from fedsim.system.profiles import DEVICES
from tests.helpers import cli

RPI4, SERVER = DEVICES.get("rpi4"), DEVICES.get("gpu-server")
#: ResNet-18 takes 100 ms on the device and 1 ms on the server, so FLOPs convert simply
MACHINES = Machines(RPI4, SERVER, 100.0, 1.0)


def test_resnet18_flops_constant_is_what_count_flops_says() -> None:
    from fedsim.edge.evaluate import count_flops
    from fedsim.edge.resnet import resnet18

    assert count_flops(resnet18(1000), (3, 224, 224)) == RESNET18_FLOPS


def test_predict_adds_device_link_and_server_time_and_prices_each_part() -> None:
    half = Candidate("split", RESNET18_FLOPS / 2, RESNET18_FLOPS / 2, 10_000, 1_000)
    link = FixedLink(up_mbps=8.0, down_mbps=4.0, rtt_ms=20.0, loss=0.5)
    p = predict(half, link, MACHINES)
    assert p.device_ms == pytest.approx(50.0)
    assert p.server_ms == pytest.approx(0.5)
    assert p.uplink_ms == pytest.approx(10_000 * 8 / 8e3 * 2)  # loss 0.5: twice the bytes
    assert p.downlink_ms == pytest.approx(1_000 * 8 / 4e3 * 2)
    assert p.latency_ms == pytest.approx(50.0 + 20.0 + 4.0 + 20.0 + 0.5)
    energy = RPI4.compute_w * 50.0 + RPI4.transmit_w * (24.0 + 20.0) + RPI4.idle_w * 0.5
    assert p.energy_mj == pytest.approx(energy)
    local = predict(Candidate("local", RESNET18_FLOPS, 0, 0, 0), link, MACHINES)
    assert (local.latency_ms, local.rtt_ms, local.server_ms) == (100.0, 0.0, 0.0)  # the profile's own figure


def _pred(name: str, latency: float, energy: float, accuracy: float | None = None):
    c = Candidate(name, 0, 0, 0, 0, accuracy)
    return predict(c, FixedLink(1, 1, 0), MACHINES).__class__(c, 0, 0, 0, 0, 0, latency, energy)


def test_pareto_front_and_choice_by_objective_and_accuracy() -> None:
    preds = mark_pareto(
        [
            _pred("fast", 10, 100, 0.80),
            _pred("frugal", 50, 10, 0.80),
            _pred("dominated", 60, 120, 0.70),
            _pred("accurate", 70, 90, 0.95),
        ]
    )
    assert [p.candidate.name for p in preds if p.pareto] == ["fast", "frugal", "accurate"]
    assert choose(preds, "latency").candidate.name == "fast"
    assert choose(preds, "energy").candidate.name == "frugal"
    assert choose(preds, "latency", min_accuracy=0.9).candidate.name == "accurate"
    with pytest.raises(UserError, match=r"no candidate reaches accuracy 0\.99; the best has 0\.950"):
        choose(preds, "latency", min_accuracy=0.99)
    with pytest.raises(UserError, match="has no accuracy"):
        choose([_pred("untrained", 1, 1)], "latency", min_accuracy=0.5)


def test_resnet_candidates_cover_local_offload_and_both_codecs_per_boundary() -> None:
    stages = [("stem", 10.0), ("layer1", 20.0), ("pool_fc", 1.0)]
    cands = resnet_candidates(stages, [100, 50, 10], {90: (900.0, 2.0)}, accuracy=0.5)
    by_name = {c.name: c for c in cands}
    assert list(by_name) == [
        "local",
        "offload-q90",
        "split-stem-fp32",
        "split-stem-quant8",
        "split-layer1-fp32",
        "split-layer1-quant8",
    ]
    assert by_name["local"].device_flops == 31.0 and not by_name["local"].remote
    assert (by_name["offload-q90"].up_bytes, by_name["offload-q90"].device_extra_ms) == (900.0, 2.0)
    split = by_name["split-layer1-quant8"]
    assert (split.device_flops, split.server_flops) == (30.0, 1.0)
    assert by_name["split-stem-fp32"].up_bytes == 400 and by_name["split-stem-quant8"].up_bytes == 105


@dataclass(frozen=True)
class TwoPhases:
    """A fast link for the first half of each period, a slow one for the second."""

    fast: FixedLink
    slow: FixedLink
    duration: float = 20.0

    def at(self, t: float) -> FixedLink:
        return self.fast if (t % self.duration) < self.duration / 2 else self.slow


def test_adaptive_beats_every_fixed_candidate_on_an_alternating_link() -> None:
    cands = [
        Candidate("local", RESNET18_FLOPS, 0, 0, 0),
        Candidate("offload", 0, RESNET18_FLOPS, 20_000, 100),
    ]
    trace = TwoPhases(FixedLink(50, 50, 5), FixedLink(0.5, 0.5, 200))
    out = plan_over_trace(cands, trace, MACHINES, "latency")
    assert out["requests"] == 20 and out["adaptive_picks"] == {"offload": 10, "local": 10}
    fixed = out["fixed"]
    assert out["adaptive"]["latency_ms"] < min(f["latency_ms"] for f in fixed.values())
    assert out["adaptive_vs_best_fixed"] < 1.0
    assert out["best_fixed"] == "local"  # the slow phase costs offloading 320 ms + 200 ms RTT


def test_plan_command_writes_the_table_json_and_figure(tmp_path: Path) -> None:
    out = cli(
        "edge", "plan", "resnet18", "--device", "rpi4", "--network", "lte", "--out", str(tmp_path / "p")
    )
    assert out.returncode == 0, out.stderr
    assert "chosen by latency" in out.stdout
    plan = json.loads((tmp_path / "p" / "plan.json").read_text())
    names = {c["name"] for c in plan["candidates"]}
    assert {"local", "offload-q90", "split-layer2-quant8"} <= names and len(names) == 12
    local = next(c for c in plan["candidates"] if c["name"] == "local")
    # the rpi4 profile's ResNet-18 latency, plus preprocessing timed here and scaled to the Pi
    assert (
        local["latency_ms"] == pytest.approx(100.0 + local["device_extra_ms"])
        and local["device_extra_ms"] > 0
    )
    assert plan["chosen"] in {c["name"] for c in plan["candidates"] if c["pareto"]}
    assert (tmp_path / "p" / "plan.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["resnet18", "--device", "toaster", "--network", "lte"], "unknown device profile 'toaster'"),
        (["resnet18", "--network", "lte", "--trace", "x.csv"], "exactly one of --network and --trace"),
        (["resnet18", "--network", "5/x/50"], "UP/DOWN/RTT"),
        (["resnet18", "--network", "lte", "--min-accuracy", "0.5"], "has no accuracy"),
        (["resnet18", "--network", "lte", "--objective", "speed"], "--objective 'speed'"),
        (["no-such-run", "--network", "lte"], "expected one of resnet18, resnet50, resnet152 or a BottleFit"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    out = cli("edge", "plan", *args)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [x for x in out.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in out.stderr


def test_plan_of_a_bottlefit_run_offers_each_trained_c_with_its_accuracy(
    tiny_run: Path, tmp_path: Path
) -> None:
    from fedsim.edge.evaluate import evaluate_run

    rows = {r["C"]: r for r in evaluate_run(tiny_run)["rows"]}
    out = cli(
        "edge", "plan", str(tiny_run), "--network", "wifi", "--min-accuracy", "0", "--out", str(tmp_path)
    )
    assert out.returncode == 0, out.stderr
    plan = {c["name"]: c for c in json.loads((tmp_path / "plan.json").read_text())["candidates"]}
    assert set(plan) == {"local", "offload-q90", "bottlefit-C1", "bottlefit-C3"}
    for c, row in rows.items():
        assert plan[f"bottlefit-C{c}"]["accuracy"] == row["accuracy"]
        assert plan[f"bottlefit-C{c}"]["up_bytes"] == row["payload_bytes"]
    best = max(r["accuracy"] for r in [*rows.values(), {"accuracy": plan["local"]["accuracy"]}])
    strict = cli("edge", "plan", str(tiny_run), "--network", "wifi", "--min-accuracy", str(best))
    assert strict.returncode == 0 and "chosen by latency" in strict.stdout
