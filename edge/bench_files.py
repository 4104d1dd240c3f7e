"""An edge bench folder's files, and the stages a worker times per request.

Written by the bench (``fedsim.edge.bench``) and its workers (``fedsim.edge.worker``), read by
the bench's report (``fedsim.edge.report``)."""

from __future__ import annotations

BENCH_FILE = "bench.yaml"
COMPARISON_FILE = "comparison.json"
WORKERS_DIR = "workers"
REQUESTS_FILE = "requests.jsonl"
TRACE_FILE = "power_trace.json"
#: Per-request latency stages of a bench worker (ms), in pipeline order; ``total`` is their sum.
BENCH_STAGES = (
    "preprocess",
    "head",
    "encode",
    "serialise",
    "network",
    "server_queue",
    "server_decode",
    "tail",
    "decode",
)


def way_name(mode: str, channels: int | None) -> str:
    """A way of running a request as rows and comparisons name it: ``local``, ``offload``,
    ``split-C3``."""
    return f"split-C{channels}" if mode == "split" else mode
