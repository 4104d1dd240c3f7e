"""The run's results: ``summary.json`` (percentiles per stage, energy, accuracy, bytes,
failures) and ``power_trace.json`` (meter samples over the first requests)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fedsim.edge.bench_files import BENCH_STAGES
from fedsim.edge.power import Meter
from fedsim.edge.shaper import Shaper
from fedsim.edge.worker.config import WorkerConfig
from fedsim.report.data import percentiles

#: Stage durations (ms) in each row; the ``server_*`` and ``tail`` ones come from the reply.
STAGES = (*BENCH_STAGES, "total")
#: Device-side stages that carry energy (``network`` covers the wait for the reply).
ENERGY_STAGES = ("preprocess", "head", "encode", "serialise", "network", "decode")
#: The stages that run on the device itself (its compute, not the link).
DEVICE_STAGES = tuple(s for s in ENERGY_STAGES if s != "network")


def power_trace(meter: Meter, traced: list[tuple[int, list[tuple[str, float, float]]]]) -> dict[str, Any]:
    """The meter's samples over the first requests and their stage windows (seconds from the first)."""
    t, w = meter.trace()
    if not traced or not traced[0][1]:
        return {"t_s": [], "watts": [], "stages": [], "meter": meter.describe()}
    start = traced[0][1][0][1]
    end = traced[-1][1][-1][2]
    keep = (t >= start) & (t <= end)
    return {
        "t_s": [float(x - start) for x in t[keep]],
        "watts": [float(x) for x in w[keep]],
        "stages": [
            {"request_id": rid, "stage": name, "t0_s": a - start, "t1_s": b - start}
            for rid, marks in traced
            for name, a, b in marks
        ],
        "note": "real time on this host (stage durations are not scaled to the emulated device here)",
        "meter": meter.describe(),
    }


def summarise(
    cfg: WorkerConfig,
    rows: list[dict[str, Any]],
    wall_s: float,
    *,
    channels: int | None,
    model: str | None,
    raw_bytes: int,
    time_scale: float,
    server_device: str,
    calibration: dict[str, Any] | None,
    meter: Meter,
    shaper: Shaper,
) -> dict[str, Any]:
    """Percentiles per stage over successful requests, energy, accuracy, bytes, failures."""
    good = [r for r in rows if r["ok"]]
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "token"}
    return {
        "label": cfg.label(channels),
        "mode": cfg.mode,
        "device": cfg.device,
        "network": cfg.network_name,
        "channels": channels,
        "model": model,
        "requests": len(rows),
        "ok": len(good),
        "failed": len(rows) - len(good),
        "errors": sorted({r["error"] for r in rows if r["error"]}),
        "accuracy": (sum(r["correct"] for r in good) / len(good)) if good else float("nan"),
        "latency_ms": {s: percentiles([r[f"{s}_ms"] for r in good]) for s in STAGES},
        "energy_J": {
            s: percentiles([r["energy_J"].get(s, 0.0) for r in good])["mean"]
            for s in (*ENERGY_STAGES, "probe", "total")
        },
        "choices": dict(Counter(r["mode"] for r in good).most_common()),
        "probes": sum(r.get("probes", 0) for r in rows),
        "probe_requests": sum(1 for r in rows if r.get("why", {}).get("probe") == "request"),
        "payload_bytes": percentiles([r["payload_bytes"] for r in good])["mean"],
        "wire_bytes": percentiles([r["wire_bytes"] for r in good])["mean"],
        "reply_bytes": percentiles([r["reply_bytes"] for r in good])["mean"],
        "raw_bytes": raw_bytes,
        "wall_s": wall_s,
        "time_scale": time_scale,
        "server_device": server_device,
        "calibration": calibration,
        "meter": meter.describe(),
        "shaper": shaper.describe(),
        "config": config,
    }
