"""Dashboards: figures of a run folder (or several) and one self-contained report.html.

    from fedsim.report import write_report, write_compare
    write_report(Path("runs/quickstart-..."))          # RUN/report.html and RUN/figures/*.png|svg
    write_compare([run_a, run_b], Path("out"))         # out/report.html, figures overlaid

A figure is one function registered in :data:`fedsim.report.figures.FIGURES`.
"""

from fedsim.report.html import write_compare, write_report

__all__ = ["write_compare", "write_report"]
