"""Shipped bandwidth/RTT traces (CSV) for :mod:`fedsim.edge.traces`.

``python -m fedsim.edge.traces`` rewrites them from :func:`fedsim.edge.traces.shipped_recipes`.
"""
