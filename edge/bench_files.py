"""An edge bench folder's files, and the stages a worker times per request.

Written by the bench (``fedsim.edge.bench``) and its workers (``fedsim.edge.worker``), read by
the bench's report (``fedsim.edge.report``)."""

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
