"""``fedsim edge plan``: predict local, offloading and every split for a device and a link; choose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fedsim.edge.commands.common import console
from fedsim.edge.plan import (
    OBJECTIVES,
    FixedLink,
    Link,
    Machines,
    Prediction,
    choose,
    mark_pareto,
    plan_over_trace,
    predict,
)
from fedsim.edge.plan_costs import RESNETS, resnet_plan_candidates
from fedsim.edge.plan_measure import measure_for, run_candidates, with_overheads
from fedsim.errors import UserError


def _profile(registry: Any, name: str, what: str) -> Any:
    if name not in registry:
        raise UserError(f"unknown {what} {name!r}; expected one of: {', '.join(registry.names())}")
    return registry.get(name)


def _link(network: str) -> FixedLink:
    """A registered network, or UP/DOWN/RTT (Mbit/s, Mbit/s, ms)."""
    from fedsim.system.profiles import NETWORKS

    if network in NETWORKS:
        return FixedLink.of(NETWORKS.get(network))
    parts = network.split("/")
    try:
        up, down, rtt = (float(p) for p in parts)
    except ValueError:
        raise UserError(
            f"--network {network!r}: expected one of {', '.join(NETWORKS.names())} or UP/DOWN/RTT "
            "(Mbit/s, Mbit/s, ms), e.g. 5/20/50"
        ) from None
    if up <= 0 or down <= 0 or rtt < 0:
        raise UserError(f"--network {network!r}: bandwidths must be positive and the RTT not negative")
    return FixedLink(up, down, rtt)


def _table(preds: list[Prediction], chosen: Prediction, title: str) -> Table:
    table = Table(title=title)
    for col in (
        "candidate",
        "device ms",
        "payload B",
        "link ms",
        "server ms",
        "latency ms",
        "energy mJ",
        "accuracy",
        "front",
    ):
        table.add_column(col, justify="right")
    for p in sorted(preds, key=lambda p: p.latency_ms):
        c = p.candidate
        table.add_row(
            ("* " if p is chosen else "") + c.name,
            f"{p.device_ms:.2f}",
            f"{c.up_bytes:,.0f}",
            f"{p.uplink_ms + p.downlink_ms + p.rtt_ms:.2f}",
            f"{p.server_ms:.2f}",
            f"{p.latency_ms:.2f}",
            f"{p.energy_mj:.1f}",
            "-" if c.accuracy is None else f"{c.accuracy:.3f}",
            "yes" if p.pareto else "",
        )
    return table


def _figure(preds: list[Prediction], chosen: Prediction, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for p in preds:
        ax.scatter(p.latency_ms, p.energy_mj, c="tab:red" if p.pareto else "tab:gray", s=28, zorder=3)
        ax.annotate(
            p.candidate.name,
            (p.latency_ms, p.energy_mj),
            fontsize=6,
            xytext=(3, 2),
            textcoords="offset points",
        )
    front = sorted((p for p in preds if p.pareto), key=lambda p: p.latency_ms)
    ax.plot(
        [p.latency_ms for p in front], [p.energy_mj for p in front], c="tab:red", lw=1, label="Pareto front"
    )
    ax.scatter(
        [chosen.latency_ms],
        [chosen.energy_mj],
        marker="*",
        s=160,
        c="gold",
        edgecolors="k",
        zorder=4,
        label=f"chosen: {chosen.candidate.name}",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("predicted latency per inference (ms)")
    ax.set_ylabel("predicted device energy (mJ)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plan(
    model: Annotated[str, typer.Argument(help="resnet18, resnet50, resnet152, or a BottleFit run folder.")],
    device: Annotated[
        str, typer.Option(help="Device profile: jetson-nano, jetson-orin, rpi4, gpu-server, this-host.")
    ] = "rpi4",
    server: Annotated[str, typer.Option(help="Server profile.")] = "gpu-server",
    network: Annotated[
        str | None, typer.Option(help="wifi, lte, 3g, or UP/DOWN/RTT in Mbit/s and ms.")
    ] = None,
    trace: Annotated[
        str | None, typer.Option(help="A bandwidth trace (shipped name or CSV) instead of --network.")
    ] = None,
    size: Annotated[int, typer.Option(help="Input side in pixels (ResNets).", min=32, max=256)] = 224,
    objective: Annotated[str, typer.Option(help="What to minimise: latency or energy.")] = "latency",
    min_accuracy: Annotated[
        float, typer.Option(help="Only candidates at least this accurate.", min=0, max=1)
    ] = 0.0,
    jpeg_quality: Annotated[
        list[int] | None, typer.Option(help="Offloading JPEG quality (repeatable).", min=1, max=95)
    ] = None,
    interval: Annotated[float, typer.Option(help="With --trace: seconds between requests.", min=0.01)] = 1.0,
    out: Annotated[Path | None, typer.Option(help="Write OUT/plan.json and OUT/plan.png.")] = None,
) -> None:
    """Predict latency and device energy of local, offloading and each split; mark the front; choose."""
    from fedsim.edge.calibrate import calibrate, device_ref_ms
    from fedsim.system.profiles import DEVICES

    if objective not in OBJECTIVES:
        raise UserError(f"--objective {objective!r}: expected one of: {', '.join(OBJECTIVES)}")
    if (network is None) == (trace is None):
        raise UserError("expected exactly one of --network and --trace")
    dev, srv = _profile(DEVICES, device, "device profile"), _profile(DEVICES, server, "server profile")
    host_ms = calibrate().host_ref_ms
    machines = Machines(dev, srv, device_ref_ms(dev) or host_ms, device_ref_ms(srv) or host_ms)
    qualities = sorted(set(jpeg_quality or [90]))
    if model in RESNETS:
        candidates = resnet_plan_candidates(model, size, qualities)
        what = f"{model} at {size}x{size}"
    else:
        folder = Path(model)
        if not folder.is_dir():
            raise UserError(
                f"MODEL {model!r}: expected one of {', '.join(RESNETS)} or a BottleFit run folder"
            )
        candidates, what = run_candidates(folder, qualities), f"BottleFit run {folder.name}"
        size = int(json.loads((folder / "evaluate.json").read_text())["input"]["shape"][-1])
    candidates = with_overheads(candidates, measure_for(candidates, size), machines.device_ref_ms / host_ms)
    link: Link
    result: dict[str, Any] = {
        "model": what,
        "device": device,
        "server": server,
        "objective": objective,
        "min_accuracy": min_accuracy,
    }
    if trace is not None:
        from fedsim.edge.traces import resolve_trace

        tr = resolve_trace(trace)
        link = tr.mean()
        over = plan_over_trace(candidates, tr, machines, objective, min_accuracy, interval)
        result["trace"] = {"name": tr.name, "duration_s": tr.duration, **over}
    else:
        link = _link(network)  # type: ignore[arg-type]  # set: exactly one of the two is
    preds = mark_pareto([predict(c, link, machines) for c in candidates])
    chosen = choose(preds, objective, min_accuracy)
    where = f"trace {trace} (mean link)" if trace else f"network {network}"
    title = f"{what} on {device}, server {server}, {where}"
    console.print(_table(preds, chosen, title))
    console.print(
        f"chosen by {objective}: {chosen.candidate.name} "
        f"({chosen.latency_ms:.1f} ms, {chosen.energy_mj:.1f} mJ)",
        highlight=False,
    )
    if trace is not None:
        over = result["trace"]
        console.print(
            f"over the trace ({over['requests']} requests, one every {interval:g} s): adaptive "
            f"{over['adaptive']['latency_ms']:.1f} ms, {over['adaptive']['energy_mj']:.1f} mJ; best fixed "
            f"{over['best_fixed']}; adaptive / best fixed {over['adaptive_vs_best_fixed']:.3f}",
            highlight=False,
        )
    result.update(
        {
            "link": {"up_mbps": link.up_mbps, "down_mbps": link.down_mbps, "rtt_ms": link.rtt_ms},
            "chosen": chosen.candidate.name,
            "candidates": [p.row() for p in preds],
        }
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "plan.json").write_text(json.dumps(result, indent=2) + "\n")
        _figure(preds, chosen, out / "plan.png", title)
        console.print(f"wrote {out / 'plan.json'} and {out / 'plan.png'}", highlight=False)
