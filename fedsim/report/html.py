"""One self-contained report.html (figures embedded as base64 PNG) plus RUN/figures/*.png|svg.

What a page says about a run depends on its kind: a :class:`View` registered in
:data:`VIEWS` under the kind's name (the federated one here, others by their packages).
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from fedsim.registry import Registry
from fedsim.report.data import RunData, load_run
from fedsim.report.figures import FIGURES, KIND, NEEDS, OPTIONAL, ORDER

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


def status_note(run: RunData, done: Any, planned: Any, what: str = "planned") -> list[str]:
    """A note when the run has no summary or did not complete (``done`` of ``planned`` ``what``)."""
    s = run.summary
    if not s:
        return ["no summary.json (the run was interrupted before writing it, or is still running)"]
    if s.get("status") not in (None, "completed"):
        return [f"run status is {s['status']!r}: {done} of {planned} {what} completed"]
    return []


def _fl_notes(run: RunData) -> list[str]:
    s = run.summary
    notes = status_note(run, s.get("rounds_completed", "?"), s.get("rounds_planned", "?"))
    if not run.metrics:
        notes.append("no metrics rows (metrics.jsonl is absent or empty)")
    if not run.client_rows("train"):
        notes.append("no client train rows")
    if not run.client_rows("evaluate"):
        notes.append("no client evaluation rows")
    if run.metrics and not run.has("server_accuracy"):
        notes.append("no server (generic) evaluation rows")
    return notes


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


R = TypeVar("R", bound=RunData)


@dataclass(frozen=True)
class View(Generic[R]):
    """How the page shows one kind of run: notes on what it lacks, its summary rows, more HTML."""

    config_name: str  # what its configuration file is called on the page
    notes: Callable[[R], list[str]]  # what the folder lacks (interrupted or partial runs), in words
    rows: Callable[[R], list[tuple[str, Any]]]  # its summary table, after the run's name
    section: Callable[[R], str] | None = None  # HTML of its own after the summary (tables)


#: kind name (as in fedsim.report.data.RUN_KINDS) -> its View
VIEWS: Registry[View[Any]] = Registry("report view of a kind of run")
VIEWS.register("fl", summary="federated run")(View("scenario", _fl_notes, _fl_rows))


def missing_notes(run: RunData) -> list[str]:
    """What the run lacks (interrupted or partial runs), in words."""
    return VIEWS.get(run.kind).notes(run)


def _summary_rows(run: RunData) -> list[tuple[str, Any]]:
    rows = [("run", run.name), *VIEWS.get(run.kind).rows(run)]
    if run.summary.get("elapsed_s") is not None:
        rows.append(("wall time (s)", run.summary["elapsed_s"]))
    return rows


def num(v: Any, spec: str, scale: float = 1.0) -> str:
    """A number in a table cell; '-' for absent or NaN."""
    if not isinstance(v, int | float) or isinstance(v, bool) or v != v:
        return "-"
    return format(scale * v, spec)


def pct(v: Any) -> str:
    """A relative change in a table cell, e.g. '-37.0%'; '-' for absent or NaN."""
    out = num(v, "+.1f")
    return out if out == "-" else f"{out}%"


def grid(table_id: str, head: list[str], rows: list[list[str]]) -> str:
    """An HTML table with a header row (cells already formatted)."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table id="{html.escape(table_id)}"><tr>{th}</tr>{body}</table>'


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
            if name not in OPTIONAL:
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
        view = VIEWS.get(run.kind)
        if view.section is not None:
            parts.append(view.section(run))
        cfg = view.config_name
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
