"""The split planner's predictions against the testbed's measurements of the same configurations.

Runs ``fedsim edge bench`` on ``scenarios/edge_bench_resnet18.yaml`` (ResNet-18 at 224x224, a
BottleFit bottleneck of C channels in place of stem..layer2, emulated Jetson Nano and
Raspberry Pi 4 against an emulated GPU server, shaped Wi-Fi / LTE / 3G), then predicts each
measured configuration with :func:`fedsim.edge.plan.predict` from the same profiles and
links, and prints per configuration the predicted and measured mean latency and device
energy and their relative error, then the median relative error per candidate kind (local,
offload, split). The baseline is the measurement of the same run. The message sizes (JPEG
and request bytes, reply bytes) are the measured ones: the check is of the cost model (compute
from FLOPs at the profile's ResNet-18 rate; preprocessing, encoding and decoding timed on this
host and scaled as the testbed scales them; link; energy), not of a JPEG size estimate.
Target (issue 23): median relative error within 15%. Run:

    python benchmarks/plan_vs_bench.py [--requests 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def flops_of(arch: str, classes: int, size: int, split: str, channels: list[int]) -> dict[str, Any]:
    """FLOPs of the whole model and of each C's head and tail, as the bench exports them."""
    from fedsim.edge import resnet
    from fedsim.edge.bottlefit import inject_bottleneck
    from fedsim.edge.flops import count_flops

    teacher = getattr(resnet, arch)(classes).eval()
    out: dict[str, Any] = {"full": count_flops(teacher, (3, size, size))}
    for c in channels:
        model = inject_bottleneck(teacher, split, c, size).eval()
        head = count_flops(model.head, (3, size, size))
        shape = tuple(model.head(__import__("torch").zeros(1, 3, size, size)).shape[1:])
        out[c] = (head, count_flops(model.tail, shape))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20, help="measured requests per configuration")
    parser.add_argument("--set", action="append", default=[], help="bench override KEY=VALUE (repeatable)")
    parser.add_argument("--stages", action="store_true", help="also print each configuration's stage means")
    args = parser.parse_args()

    from fedsim.edge.bench import run_bench
    from fedsim.edge.calibrate import device_ref_ms
    from fedsim.edge.plan import Candidate, FixedLink, Machines, predict
    from fedsim.edge.plan_measure import measure_overheads, with_overheads
    from fedsim.edge.shaper import network_profile
    from fedsim.loader import load_bench
    from fedsim.system.profiles import DEVICES

    scenario = REPO / "scenarios" / "edge_bench_resnet18.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"requests={args.requests}", f"output.dir={tmp}", *args.set]
        bench = load_bench(scenario, overrides)
        timing = bench.model.timing
        assert timing is not None
        channels = list(timing.channels)
        flops = flops_of(timing.arch, timing.num_classes, timing.image_size, timing.split, channels)
        _, summary = run_bench(scenario, overrides, lambda line: print(line, flush=True))
    server = DEVICES.get(bench.server.device)
    numel = {c: c * (timing.image_size // 8) ** 2 for c in channels}  # C x 28 x 28 at 224
    overheads = measure_overheads(timing.image_size, [bench.jpeg_quality], list(numel.values()))
    host_ms = summary["calibration"]["host_ref_ms"]
    rows, errors = [], {"local": [], "offload": [], "split": []}
    for w in summary["workers"]:
        device = DEVICES.get(w["device"])
        machines = Machines(device, server, device_ref_ms(device), device_ref_ms(server))  # type: ignore[arg-type]
        net = next((n for n in bench.networks if (n if isinstance(n, str) else n.name) == w["network"]), None)
        link = FixedLink.of(network_profile(net)) if net is not None else FixedLink(1.0, 1.0, 0.0)  # type: ignore[arg-type]
        up, down = w["wire_bytes"], w["reply_bytes"]
        if w["mode"] == "local":
            cand = Candidate("local", flops["full"], 0, 0, 0)
        elif w["mode"] == "offload":
            cand = Candidate("offload", 0, flops["full"], up, down, jpeg_quality=bench.jpeg_quality)
        else:
            head, tail = flops[w["channels"]]
            c = w["channels"]
            cand = Candidate(f"split-C{c}", head, tail, up, down, quant8_numel=numel[c])
        [cand] = with_overheads([cand], overheads, machines.device_ref_ms / host_ms)
        p = predict(cand, link, machines)
        if args.stages:
            means = {k: round(v["mean"], 2) for k, v in w["latency_ms"].items() if v["mean"]}
            print(
                w["label"],
                "measured",
                means,
                "| predicted device",
                round(p.device_ms, 2),
                "link",
                round(p.uplink_ms + p.downlink_ms + p.rtt_ms, 2),
                "server",
                round(p.server_ms, 2),
            )
        lat, energy = w["latency_ms"]["total"]["mean"], 1e3 * w["energy_J"]["total"]
        err_lat, err_energy = p.latency_ms / lat - 1, p.energy_mj / energy - 1
        errors[w["mode"]].append((abs(err_lat), abs(err_energy)))
        rows.append((w["label"], p.latency_ms, lat, err_lat, p.energy_mj, energy, err_energy))
    print("\n| configuration | predicted ms | measured ms | error | predicted mJ | measured mJ | error |")
    print("|---|---|---|---|---|---|---|")
    for label, pl, ml, el, pe, me, ee in rows:
        print(
            f"| {label} | {pl:.1f} | {ml:.1f} | {100 * el:+.0f}% | {pe:.0f} | {me:.0f} | {100 * ee:+.0f}% |"
        )
    print("\n| candidate | configurations | median abs. error, latency | median abs. error, energy |")
    print("|---|---|---|---|")
    for kind, errs in errors.items():
        if errs:
            lat = statistics.median(e[0] for e in errs)
            en = statistics.median(e[1] for e in errs)
            print(f"| {kind} | {len(errs)} | {100 * lat:.1f}% | {100 * en:.1f}% |")


if __name__ == "__main__":
    main()
