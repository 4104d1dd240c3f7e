"""Dashboards: figures of a run folder (or several) and one self-contained report.html.

    from fedsim.report import write_report, write_compare
    write_report(Path("runs/quickstart-..."))          # RUN/report.html and RUN/figures/*.png|svg
    write_compare([run_a, run_b], Path("out"))         # out/report.html, figures overlaid

A figure is one function registered in :data:`fedsim.report.figures.FIGURES`; a kind of
run folder is registered in :data:`fedsim.report.data.RUN_KINDS` and its page parts in
:data:`fedsim.report.html.VIEWS`. Packages register theirs when :mod:`fedsim.plugins`
loads them. Importing this package (or its ``data``) does not import matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedsim.report.html import write_compare, write_report

__all__ = ["write_compare", "write_report"]


def __getattr__(name: str) -> Any:
    """``write_report`` and ``write_compare``, imported (with matplotlib) when first asked for."""
    if name in __all__:
        from fedsim.report import html

        return getattr(html, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
