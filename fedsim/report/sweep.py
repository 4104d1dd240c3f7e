"""A sweep's report: the table, and curves of mean and spread over seeds per combination.

``SWEEP/report.html`` (self-contained, figures embedded) and ``SWEEP/figures/*.png|svg``.
Each figure shows one metric against rounds: per combination of the grid's keys other
than the seed, the mean over its completed cells as a line and mean ± std as a band.
"""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING, Any

import numpy as np

from fedsim.report.html import _CSS, REPORT_FILE, _write
from fedsim.runstore import METRICS_FILE

if TYPE_CHECKING:
    from fedsim.sweep import Sweep

#: Metrics drawn against rounds, when the runs have them.
CURVES = (
    ("server_accuracy", "generic test accuracy"),
    ("server_rsum", "retrieval rsum"),
    ("clients_accuracy", "local test accuracy (client mean)"),
)
FIGURES_DIR = "figures"


def _curves(sweep: Sweep, key: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per combination: (rounds, mean, std) of ``key`` over its completed cells' rows."""
    from fedsim.config.sweep import SEED, Cell

    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    groups: dict[str, list[dict[int, float]]] = {}
    for cell in sweep.cells:
        if sweep.status(cell) != "completed":
            continue
        name = Cell(tuple((k, v) for k, v in cell.values if k != SEED)).label or "all"
        rows = sweep.folder(cell).read(METRICS_FILE)
        series = {r["round"]: r[key] for r in rows if isinstance(r.get(key), int | float)}
        if series:
            groups.setdefault(name, []).append(series)
    for name, runs in groups.items():
        rounds = sorted(set.intersection(*(set(s) for s in runs)))
        values = np.array([[s[r] for r in rounds] for s in runs], dtype=float)
        out[name] = (np.array(rounds), values.mean(axis=0), values.std(axis=0))
    return out


def _figure(sweep: Sweep, key: str, label: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = _curves(sweep, key)
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=100)
    for name, (rounds, mean, std) in curves.items():
        (line,) = ax.plot(rounds, mean, label=name, linewidth=1.5)
        ax.fill_between(rounds, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("round")
    ax.set_ylabel(label)
    ax.set_title(f"{label}: mean and ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def write_sweep_report(sweep: Sweep, table: dict[str, Any], table_md: str) -> None:
    """SWEEP/report.html and SWEEP/figures/ from the cells completed so far (``table_md``: table.md)."""
    out = sweep.path / FIGURES_DIR
    out.mkdir(exist_ok=True)
    title = f"fedsim sweep: {sweep.spec['name']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(sweep.spec['source'])}: {len(sweep.cells)} cells</p>",
        "<h2>Table</h2>",
        _table_html(table_md),
        "<h2>Figures</h2>",
    ]
    for key, label in CURVES:
        fig = _figure(sweep, key, label)
        if fig is None:
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        (out / f"{key}.png").write_bytes(buf.getvalue())
        fig.savefig(out / f"{key}.svg", format="svg")
        png = base64.b64encode(buf.getvalue()).decode()
        parts.append(
            f'<figure id="fig-{key}"><img alt="{html.escape(label)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{html.escape(label)}, mean and ± std over seeds</figcaption></figure>"
        )
    parts.append("<h2>Cells</h2><ul>")
    parts += [f"<li>{html.escape(c.label)}: {html.escape(sweep.status(c))}</li>" for c in sweep.cells]
    parts.append("</ul></body></html>\n")
    _write("\n".join(parts), sweep.path / REPORT_FILE)


def _table_html(markdown: str) -> str:
    rows = [line.strip().strip("|").split(" | ") for line in markdown.splitlines() if line.startswith("|")]
    if len(rows) < 2:
        return "<p>no completed cells yet</p>"
    head, body = rows[0], rows[2:]
    th = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"
