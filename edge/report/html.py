"""The report page's parts for edge runs: notes, summary rows and the bench's tables."""

from __future__ import annotations

from typing import Any

from fedsim.edge.bench_files import BENCH_STAGES, COMPARISON_FILE, REQUESTS_FILE, WORKERS_DIR
from fedsim.edge.report.data import BenchRun, EdgeRun
from fedsim.report.html import VIEWS, View, grid, num, pct, status_note


def _edge_notes(run: EdgeRun) -> list[str]:
    s = run.summary
    notes = status_note(run, s.get("steps_completed", "?"), s.get("steps_planned", "?"))
    if not run.results:
        notes.append("no results rows (results.jsonl is absent or empty)")
    if run.evaluate is None:
        notes.append("no evaluate.json: raw-input and JPEG sizes not marked (run 'fedsim edge evaluate RUN')")
    return notes


def _bench_progress(run: BenchRun) -> tuple[int, Any]:
    """(configurations that finished: a worker summary, in its folder or summary.json; planned)."""
    done = sum(1 for w in run.workers if not w.partial)
    return done, run.summary.get("configurations", "?")


def _bench_notes(run: BenchRun) -> list[str]:
    done, planned = _bench_progress(run)
    notes = status_note(run, done, planned, "configurations")
    if not run.workers:
        notes.append(f"no worker results ({WORKERS_DIR}/ is absent or empty)")
    for w in run.workers:
        where = f"{WORKERS_DIR}/{w.label}"
        if w.partial:
            n = len(w.requests)
            notes.append(
                f"{where}: no summary.json; cut off after {n} requests (statistics below are of these rows)"
                if n
                else f"{where}: no results (no summary.json, no rows in {REQUESTS_FILE})"
            )
        gone = [f for f in w.missing if not (w.partial and f in ("summary.json", REQUESTS_FILE))]
        if gone:
            notes.append(f"{where}: {', '.join(gone)} missing")
    if isinstance(planned, int) and planned > len(run.workers):
        notes.append(f"{planned - len(run.workers)} of {planned} configurations have no results at all")
    if run.comparison is None:
        notes.append(f"no {COMPARISON_FILE}: split against local and offload not compared")
    return notes


def _edge_rows(run: EdgeRun) -> list[tuple[str, Any]]:
    s = run.summary
    rows: list[tuple[str, Any]] = [("kind", "edge"), ("method", run.method)]
    rows.append(("status", s.get("status", "unknown (no summary.json)")))
    rows.append(("steps", f"{s.get('steps_completed', len(run.results))} of {s.get('steps_planned', '?')}"))
    teacher = (s.get("teacher") or {}).get("accuracy")
    if teacher is not None:
        rows.append(("teacher accuracy", teacher))
    return rows


def _bench_rows(run: BenchRun) -> list[tuple[str, Any]]:
    s, cfg = run.summary, run.config
    model = s.get("model") or {}
    server = s.get("server") or cfg.get("server") or {}
    done, planned = _bench_progress(run)
    rows: list[tuple[str, Any]] = [("kind", "edge bench (local vs offload vs split computing)")]
    rows.append(("status", s.get("status", "unknown (no summary.json)")))
    rows.append(("configurations completed", f"{done} of {planned}"))
    if model:
        rows.append(("model", f"{model.get('name', '?')} (codec {model.get('codec', '?')})"))
    rows.append(("server device", server.get("device", "?")))
    for key in ("modes", "devices", "networks"):
        if isinstance(cfg.get(key), list):
            rows.append((key, ", ".join(str(v) for v in cfg[key])))
    rows.append(
        ("requests per configuration", f"{cfg.get('requests', '?')} (+{cfg.get('warmup', '?')} warm-up)")
    )
    if s.get("started"):
        rows.append(("started", s["started"]))
    return rows


def bench_latency_table(run: BenchRun) -> str:
    """p50 / p90 / p99 / mean total latency per configuration, with energy, accuracy and payload."""
    head = ["configuration", "mode", "device", "network", "C", "ok / requests"]
    head += ["p50 (ms)", "p90 (ms)", "p99 (ms)", "mean (ms)", "energy (mJ)", "accuracy", "payload (B)"]
    rows = []
    for w in run.workers:
        s = w.summary
        rows.append(
            [
                w.label + (" (partial)" if w.partial else ""),
                w.mode,
                w.device,
                w.network,
                "-" if w.channels is None else str(w.channels),
                f"{s.get('ok', '?')} / {s.get('requests', '?')}",
                *(num(w.latency("total", q), ".2f") for q in ("p50", "p90", "p99", "mean")),
                num(w.energy_J(), ".3f", 1e3),
                num(s.get("accuracy"), ".3f"),
                num(s.get("payload_bytes"), ",.0f"),
            ]
        )
    return grid("bench-latency", head, rows)


def bench_stage_table(run: BenchRun) -> str:
    """p50 / p90 / p99 / mean of every stage of every configuration (stages that took time)."""
    rows = []
    for w in run.workers:
        for stage in (*BENCH_STAGES, "total"):
            if not w.latency(stage, "mean"):
                continue
            rows.append(
                [w.label, stage, *(num(w.latency(stage, q), ".3f") for q in ("p50", "p90", "p99", "mean"))]
            )
    return grid(
        "bench-stages", ["configuration", "stage", "p50 (ms)", "p90 (ms)", "p99 (ms)", "mean (ms)"], rows
    )


def bench_comparison_table(run: BenchRun) -> str:
    """Split against local and offload per device x network x C (% change), BottleFit's reported beside."""
    head = ["device", "network", "C", "split latency (ms)", "latency vs local", "latency vs offload"]
    head += ["split energy (mJ)", "energy vs local", "energy vs offload", "split accuracy", "payload (B)"]
    rows = []
    for r in run.comparison or []:
        rows.append(
            [
                str(r.get("device", "?")),
                str(r.get("network", "?")),
                str(r.get("C", "?")),
                num(r.get("split_latency_ms"), ".2f"),
                pct(r.get("latency_vs_local_pct")),
                pct(r.get("latency_vs_offload_pct")),
                num(r.get("split_energy_J"), ".3f", 1e3),
                pct(r.get("energy_vs_local_pct")),
                pct(r.get("energy_vs_offload_pct")),
                num(r.get("split_accuracy"), ".3f"),
                num(r.get("split_payload_bytes"), ",.0f"),
            ]
        )
    ref = run.summary.get("bottlefit_reported_pct") or {}
    if ref:
        reported = {k: pct(v) for k, v in ref.items()}
        rows.append(
            [
                "BottleFit (reported)",
                "-",
                "-",
                "-",
                reported.get("latency_vs_local", "-"),
                reported.get("latency_vs_offload", "-"),
                "-",
                reported.get("energy_vs_local", "-"),
                reported.get("energy_vs_offload", "-"),
                "-",
                "-",
            ]
        )
    return grid("bench-comparison", head, rows)


def _bench_sections(run: BenchRun) -> str:
    if not run.workers:
        return ""
    parts = [
        "<h3>Latency percentiles (total per request, successful requests)</h3>",
        bench_latency_table(run),
        "<details><summary>per stage</summary>",
        bench_stage_table(run),
        "</details>",
        "<h3>Split computing against local computing and edge offloading (mean per inference)</h3>",
    ]
    if run.comparison is None:
        parts.append(f"<p>not available (no {COMPARISON_FILE})</p>")
    else:
        parts.append(bench_comparison_table(run))
        parts.append(
            "<p>Change of split computing's mean latency and device energy against the same device "
            "computing locally and offloading a JPEG over the same network; negative is a saving. "
            "BottleFit's row is what the paper reports (Matsubara et al., WoWMoM 2022), not measured "
            "here.</p>"
        )
    return "\n".join(parts)


VIEWS.register("edge", summary="edge training (BottleFit)")(View("experiment", _edge_notes, _edge_rows))
VIEWS.register("edge-bench", summary="edge bench")(View("bench", _bench_notes, _bench_rows, _bench_sections))
