"""The report's parts for edge runs, registered with fedsim.report's registries on import.

``data`` registers the kinds of run folder (edge training, edge bench) and reads them,
``html`` their notes, summary rows and tables, ``figures`` their figures. The report
imports this package through :mod:`fedsim.plugins`; nothing else in edge imports it
(it pulls in matplotlib, which the edge worker does without).
"""

from fedsim.edge.report import adaptive_figure, data, figures, html

__all__ = ["adaptive_figure", "data", "figures", "html"]
