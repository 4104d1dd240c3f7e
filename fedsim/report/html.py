"""One self-contained report.html (figures embedded as base64 PNG) plus RUN/figures/*.png|svg."""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedsim.report.data import (
    BENCH_STAGES,
    COMPARISON_FILE,
    REQUESTS_FILE,
    WORKERS_DIR,
    RunData,
    load_run,
)
from fedsim.report.figures import FIGURES, KIND, NEEDS, ORDER

REPORT_FILE = "report.html"
FIGURES_DIR = "figures"

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:#222;background:#fff;margin:2em auto;
max-width:1100px;padding:0 1em;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f5f5f5} pre{background:#f7f7f7;border:1px solid #e5e5e5;padding:.6em;overflow:auto;
max-height:24em;font-size:.85em} .missing{color:#8a4b00;background:#fff6e5;border:1px solid #f0d9b5;
padding:.5em 1em} figure{margin:1em 0} figcaption{font-size:.9em;color:#555} img{max-width:100%;
border:1px solid #eee} details summary{cursor:pointer}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _status_note(run: RunData, done: Any, planned: Any, what: str = "planned") -> list[str]:
    s = run.summary
    if not s:
        return ["no summary.json (the run was interrupted before writing it, or is still running)"]
    if s.get("status") not in (None, "completed"):
        return [f"run status is {s['status']!r}: {done} of {planned} {what} completed"]
    return []


def _fl_notes(run: RunData) -> list[str]:
    s = run.summary
    notes = _status_note(run, s.get("rounds_completed", "?"), s.get("rounds_planned", "?"))
    if not run.metrics:
        notes.append("no metrics rows (metrics.jsonl is absent or empty)")
    if not run.client_rows("train"):
        notes.append("no client train rows")
    if not run.client_rows("evaluate"):
        notes.append("no client evaluation rows")
    if run.metrics and not run.has("server_accuracy"):
        notes.append("no server (generic) evaluation rows")
    return notes


def _edge_notes(run: RunData) -> list[str]:
    s = run.summary
    notes = _status_note(run, s.get("steps_completed", "?"), s.get("steps_planned", "?"))
    if not run.results:
        notes.append("no results rows (results.jsonl is absent or empty)")
    if run.evaluate is None:
        notes.append("no evaluate.json: raw-input and JPEG sizes not marked (run 'fedsim edge evaluate RUN')")
    return notes


def _bench_progress(run: RunData) -> tuple[int, Any]:
    """(configurations that finished: a worker summary, in its folder or summary.json; planned)."""
    done = sum(1 for w in run.workers if not w.partial)
    return done, run.summary.get("configurations", "?")


def _bench_notes(run: RunData) -> list[str]:
    done, planned = _bench_progress(run)
    notes = _status_note(run, done, planned, "configurations")
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


#: run kind -> what its folder lacks, in words
NOTES: dict[str, Callable[[RunData], list[str]]] = {
    "fl": _fl_notes,
    "edge": _edge_notes,
    "edge-bench": _bench_notes,
}


def missing_notes(run: RunData) -> list[str]:
    """What the run lacks (interrupted or partial runs), in words."""
    return NOTES[run.kind](run)


def _fl_rows(run: RunData) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [("kind", "federated"), ("algorithm", run.method)]
    rows.append(("status", run.summary.get("status", "unknown (no summary.json)")))
    last = run.metrics[-1]["round"] if run.metrics else 0
    rows.append(("rounds", f"{last} of {run.config.get('rounds', '?')}"))
    for key, name in (
        ("server_accuracy", "final generic accuracy"),
        ("server_ssec_accuracy", "final generic accuracy (SSE-C)"),
        ("clients_accuracy", "final local accuracy"),
        ("virtual_time_s", "virtual time (s)"),
        ("energy_J", "energy (J)"),
    ):
        _, vals = run.column(key)
        if vals:
            rows.append((name, vals[-1]))
    _, acc = run.column("server_accuracy")
    if acc:
        rows.append(("best generic accuracy", max(acc)))
    return rows


def _edge_rows(run: RunData) -> list[tuple[str, Any]]:
    s = run.summary
    rows: list[tuple[str, Any]] = [("kind", "edge"), ("method", run.method)]
    rows.append(("status", s.get("status", "unknown (no summary.json)")))
    rows.append(("steps", f"{s.get('steps_completed', len(run.results))} of {s.get('steps_planned', '?')}"))
    teacher = (s.get("teacher") or {}).get("accuracy")
    if teacher is not None:
        rows.append(("teacher accuracy", teacher))
    return rows


def _bench_rows(run: RunData) -> list[tuple[str, Any]]:
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


#: run kind -> rows of its summary table (after the run's name)
SUMMARY_ROWS: dict[str, Callable[[RunData], list[tuple[str, Any]]]] = {
    "fl": _fl_rows,
    "edge": _edge_rows,
    "edge-bench": _bench_rows,
}


def _summary_rows(run: RunData) -> list[tuple[str, Any]]:
    rows = [("run", run.name), *SUMMARY_ROWS[run.kind](run)]
    if run.summary.get("elapsed_s") is not None:
        rows.append(("wall time (s)", run.summary["elapsed_s"]))
    return rows


def _num(v: Any, spec: str, scale: float = 1.0) -> str:
    """A number in a table cell; '-' for absent or NaN."""
    if not isinstance(v, int | float) or isinstance(v, bool) or v != v:
        return "-"
    return format(scale * v, spec)


def _pct(v: Any) -> str:
    """A relative change in a table cell, e.g. '-37.0%'; '-' for absent or NaN."""
    out = _num(v, "+.1f")
    return out if out == "-" else f"{out}%"


def _grid(table_id: str, head: list[str], rows: list[list[str]]) -> str:
    """An HTML table with a header row (cells already formatted)."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table id="{html.escape(table_id)}"><tr>{th}</tr>{body}</table>'


def bench_latency_table(run: RunData) -> str:
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
                *(_num(w.latency("total", q), ".2f") for q in ("p50", "p90", "p99", "mean")),
                _num(w.energy_J(), ".3f", 1e3),
                _num(s.get("accuracy"), ".3f"),
                _num(s.get("payload_bytes"), ",.0f"),
            ]
        )
    return _grid("bench-latency", head, rows)


def bench_stage_table(run: RunData) -> str:
    """p50 / p90 / p99 / mean of every stage of every configuration (stages that took time)."""
    rows = []
    for w in run.workers:
        for stage in (*BENCH_STAGES, "total"):
            if not w.latency(stage, "mean"):
                continue
            rows.append(
                [w.label, stage, *(_num(w.latency(stage, q), ".3f") for q in ("p50", "p90", "p99", "mean"))]
            )
    return _grid(
        "bench-stages", ["configuration", "stage", "p50 (ms)", "p90 (ms)", "p99 (ms)", "mean (ms)"], rows
    )


def bench_comparison_table(run: RunData) -> str:
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
                _num(r.get("split_latency_ms"), ".2f"),
                _pct(r.get("latency_vs_local_pct")),
                _pct(r.get("latency_vs_offload_pct")),
                _num(r.get("split_energy_J"), ".3f", 1e3),
                _pct(r.get("energy_vs_local_pct")),
                _pct(r.get("energy_vs_offload_pct")),
                _num(r.get("split_accuracy"), ".3f"),
                _num(r.get("split_payload_bytes"), ",.0f"),
            ]
        )
    ref = run.summary.get("bottlefit_reported_pct") or {}
    if ref:
        pct = {k: _pct(v) for k, v in ref.items()}
        rows.append(
            [
                "BottleFit (reported)",
                "-",
                "-",
                "-",
                pct.get("latency_vs_local", "-"),
                pct.get("latency_vs_offload", "-"),
                "-",
                pct.get("energy_vs_local", "-"),
                pct.get("energy_vs_offload", "-"),
                "-",
                "-",
            ]
        )
    return _grid("bench-comparison", head, rows)


def _bench_sections(run: RunData) -> str:
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


#: run kind -> extra HTML after its summary (tables of its own)
SECTIONS: dict[str, Callable[[RunData], str]] = {"edge-bench": _bench_sections}
#: run kind -> the name of its configuration file in the report
CONFIG_NAMES = {"fl": "scenario", "edge": "experiment", "edge-bench": "bench"}


def render_figures(
    runs: list[RunData], out: Path | None
) -> tuple[list[tuple[str, str, str, int, int]], list[str]]:
    """Draw every registered figure: ([(name, title, base64 PNG, width px, height px)], [names not
    drawn]); PNG and SVG of each go to ``out`` when given."""
    drawn, skipped = [], []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    kinds = {r.kind for r in runs}
    for name in ORDER:
        if KIND[name] not in kinds:
            continue
        entry = FIGURES.entry(name)
        try:
            fig = entry.obj(runs)
        except Exception as exc:  # one broken figure must not cost the report
            skipped.append(f"{name}: failed ({type(exc).__name__}: {exc})")
            continue
        if fig is None:
            skipped.append(f"{entry.summary}: not drawn, needs {NEEDS[name]}")
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        png = buf.getvalue()
        if out is not None:
            (out / f"{name}.png").write_bytes(png)
            fig.savefig(out / f"{name}.svg", format="svg")
        width, height = (round(v) for v in fig.get_size_inches() * fig.dpi)
        drawn.append((name, entry.summary, base64.b64encode(png).decode(), width, height))
    return drawn, skipped


def render_html(runs: list[RunData], out: Path | None, title: str) -> str:
    """The report page of ``runs`` (figures also written to ``out``)."""
    drawn, skipped = render_figures(runs, out)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for run in runs:
        head = f"<h2>{html.escape(run.name)}</h2>" if len(runs) > 1 else "<h2>Summary</h2>"
        parts.append(head)
        parts.append(_table(_summary_rows(run)))
        versions = run.summary.get("versions") or {}
        parts.append("<h3>Versions</h3>")
        parts.append(_table(sorted(versions.items())) if versions else "<p>unknown (no summary.json)</p>")
        notes = missing_notes(run)
        if notes:
            items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
            parts.append(
                f'<div class="missing" id="missing-{html.escape(run.name)}">'
                f"<b>Missing</b><ul>{items}</ul></div>"
            )
        section = SECTIONS.get(run.kind)
        if section is not None:
            parts.append(section(run))
        cfg = CONFIG_NAMES[run.kind]
        parts.append(
            f"<details open><summary>{cfg} (YAML)</summary>"
            f"<pre>{html.escape(run.config_text)}</pre></details>"
        )
    parts.append("<h2>Figures</h2>")
    for name, caption, png, width, height in drawn:
        parts.append(
            f'<figure id="fig-{name}"><img alt="{html.escape(caption)}" width="{width}" height="{height}" '
            f'src="data:image/png;base64,{png}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        )
    if skipped:
        items = "".join(f"<li>{html.escape(s)}</li>" for s in skipped)
        parts.append(
            f'<div class="missing" id="figures-missing"><b>Figures not drawn</b><ul>{items}</ul></div>'
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _write(page: str, target: Path) -> Path:
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(page)
    os.replace(tmp, target)
    return target


def write_report(path: Path | str) -> Path:
    """(Re)build RUN/report.html and RUN/figures/ from a run folder; returns the HTML's path."""
    run = load_run(path)
    page = render_html([run], run.path / FIGURES_DIR, f"fedsim report: {run.name}")
    return _write(page, run.path / REPORT_FILE)


def write_compare(paths: list[Path], out: Path | str) -> Path:
    """Overlay several runs into OUT/report.html and OUT/figures/; returns the HTML's path."""
    runs = [load_run(p) for p in paths]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    page = render_html(runs, out / FIGURES_DIR, f"fedsim compare: {', '.join(r.name for r in runs)}")
    return _write(page, out / REPORT_FILE)
