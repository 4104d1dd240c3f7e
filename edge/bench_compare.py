"""What a bench's runs show: split against local and offloading, and the adaptive mode
against every fixed one, per device x link."""

from __future__ import annotations

from typing import Any

from fedsim.edge.bench_files import way_name

#: Relative savings of split computing that BottleFit reports (Matsubara et al., WoWMoM 2022).
BOTTLEFIT_REPORTED = {
    "latency_vs_local": -89.0,
    "energy_vs_local": -49.0,
    "latency_vs_offload": -55.0,
    "energy_vs_offload": -37.0,
}


def _change(new: float, old: float) -> float | None:
    return None if not old or old != old or new != new else 100.0 * (new - old) / old


def compare(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Split against local and against offload (mean latency and device energy per inference, % change)."""
    by = {(s["mode"], s["device"], s["network"], s["channels"]): s for s in summaries}
    rows = []
    for s in summaries:
        if s["mode"] != "split":
            continue
        local = by.get(("local", s["device"], "none", None))
        offload = by.get(("offload", s["device"], s["network"], None))
        row = {
            "device": s["device"],
            "network": s["network"],
            "C": s["channels"],
            "split_latency_ms": s["latency_ms"]["total"]["mean"],
            "split_energy_J": s["energy_J"]["total"],
            "split_accuracy": s["accuracy"],
            "split_payload_bytes": s["payload_bytes"],
        }
        for name, ref in (("local", local), ("offload", offload)):
            if ref is None:
                continue
            row[f"{name}_latency_ms"] = ref["latency_ms"]["total"]["mean"]
            row[f"{name}_energy_J"] = ref["energy_J"]["total"]
            row[f"{name}_accuracy"] = ref["accuracy"]
            row[f"latency_vs_{name}_pct"] = _change(row["split_latency_ms"], row[f"{name}_latency_ms"])
            row[f"energy_vs_{name}_pct"] = _change(row["split_energy_J"], row[f"{name}_energy_J"])
        rows.append(row)
    return rows


def compare_adaptive(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each adaptive run against the fixed modes of its device on the same link (local has none).

    ``vs_best_fixed`` is the adaptive run's mean latency (objective ``latency``) or device
    energy per inference (``energy``, probes included) over the best fixed mode's.
    """
    rows = []
    for s in summaries:
        if s["mode"] != "adaptive":
            continue
        objective = s["config"]["objective"]
        fixed = {
            way_name(f["mode"], f["channels"]): f
            for f in summaries
            if f["mode"] != "adaptive"
            and f["device"] == s["device"]
            and (f["network"] == s["network"] or f["mode"] == "local")
        }
        if not fixed:
            continue

        def cost(w: dict[str, Any], objective: str = objective) -> float:
            return (
                w["latency_ms"]["total"]["mean"] if objective == "latency" else 1e3 * w["energy_J"]["total"]
            )

        best = min(fixed, key=lambda k: cost(fixed[k]))
        rows.append(
            {
                "device": s["device"],
                "network": s["network"],
                "objective": objective,
                "adaptive_latency_ms": s["latency_ms"]["total"]["mean"],
                "adaptive_energy_mJ": 1e3 * s["energy_J"]["total"],
                "fixed": {
                    k: {
                        "latency_ms": f["latency_ms"]["total"]["mean"],
                        "energy_mJ": 1e3 * f["energy_J"]["total"],
                    }
                    for k, f in fixed.items()
                },
                "best_fixed": best,
                "vs_best_fixed": cost(s) / cost(fixed[best]),
                "beats_every_fixed": all(cost(s) < cost(f) for f in fixed.values()),
                "choices": s.get("choices", {}),
                "probes": s.get("probes", 0),
                "probe_requests": s.get("probe_requests", 0),
            }
        )
    return rows
