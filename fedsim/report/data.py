"""Reading a run folder (federated, edge training or edge bench) for the report, tolerant of missing files.

An edge bench folder (``fedsim edge bench``) holds one sub-folder per worker configuration;
each is read into a :class:`BenchWorker`. A worker that was cut off before writing its
``summary.json`` gets one computed from the rows of its ``requests.jsonl`` (marked
``partial``), so an interrupted bench still shows what it measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fedsim.errors import UserError
from fedsim.runstore import CLIENTS_FILE, METRICS_FILE, SCENARIO_FILE, SUMMARY_FILE, RunFolder

EXPERIMENT_FILE = "experiment.yaml"
RESULTS_FILE = "results.jsonl"
EVALUATE_FILE = "evaluate.json"
# The edge bench's results format: edge/bench.py and edge/worker.py write what these name.
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


@dataclass
class BenchWorker:
    """One configuration (mode x device x network x C) of an edge bench, as far as it got."""

    label: str
    summary: dict[str, Any]
    requests: list[dict[str, Any]] = field(default_factory=list)
    trace: dict[str, Any] | None = None
    partial: bool = False  # summary computed here from requests.jsonl (no summary.json)
    missing: list[str] = field(default_factory=list)  # files of workers/<label>/ that are absent

    @property
    def mode(self) -> str:
        """local, offload or split."""
        return str(self.summary.get("mode") or self.label.split("-")[0])

    @property
    def device(self) -> str:
        """The emulated device profile."""
        return str(self.summary.get("device") or "?")

    @property
    def network(self) -> str:
        """The network profile (``none`` for local computing)."""
        return str(self.summary.get("network") or "none")

    @property
    def channels(self) -> int | None:
        """Bottleneck channels C (split computing only)."""
        c = self.summary.get("channels")
        return None if c is None else int(c)

    def latency(self, stage: str, stat: str) -> float | None:
        """A latency statistic (p50, p90, p99, mean) of a stage in ms; None when absent or NaN."""
        v = ((self.summary.get("latency_ms") or {}).get(stage) or {}).get(stat)
        return None if v is None or v != v else float(v)

    def energy_J(self, stage: str = "total") -> float | None:
        """Mean device energy of a stage per inference (J); None when absent or NaN."""
        v = (self.summary.get("energy_J") or {}).get(stage)
        return None if v is None or v != v else float(v)


@dataclass
class RunData:
    """Everything the figures read from one run folder; absent files give empty values."""

    path: Path
    kind: str  # "fl", "edge" (training) or "edge-bench"
    config_text: str
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    clients: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    evaluate: dict[str, Any] | None = None
    workers: list[BenchWorker] = field(default_factory=list)
    comparison: list[dict[str, Any]] | None = None

    @property
    def name(self) -> str:
        """The run folder's name."""
        return self.path.name

    @property
    def method(self) -> str:
        """Algorithm (FL) or method (edge) name: the key of the run's colour."""
        if self.kind == "edge":
            return str(self.config.get("method") or "bottlefit")
        if self.kind == "edge-bench":
            return "bench"
        algo = self.config.get("algorithm") or {}
        return str(algo.get("name", "?")) if isinstance(algo, dict) else str(algo)

    def column(self, key: str) -> tuple[list[float], list[float]]:
        """(rounds, values) of the metrics rows that have ``key``."""
        rows = [r for r in self.metrics if r.get(key) is not None]
        return [r["round"] for r in rows], [r[key] for r in rows]

    def has(self, key: str) -> bool:
        """Whether any metrics row has ``key``."""
        return any(r.get(key) is not None for r in self.metrics)

    def client_rows(self, phase: str) -> list[dict[str, Any]]:
        """clients.jsonl rows of one phase (train / evaluate) without errors."""
        return [r for r in self.clients if r.get("phase") == phase and "error" not in r]


#: run kind -> the configuration file that marks its folder (checked in this order)
KIND_FILES = {"fl": SCENARIO_FILE, "edge": EXPERIMENT_FILE, "edge-bench": BENCH_FILE}


def _json(file: Path) -> Any:
    """A JSON file's content; None when absent or unreadable (torn by an interruption)."""
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p90, p99 and mean (numpy's linear percentiles; NaN for no values)."""
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "mean": float("nan")}
    arr = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(arr.mean())}


def summarise_requests(label: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A worker summary from its request rows (for a worker cut off before writing summary.json)."""
    good = [r for r in rows if r.get("ok")]
    parts = label.split("-")
    mode = parts[0]
    channels = int(parts[-1][1:]) if mode == "split" and parts[-1][1:].isdigit() else None
    energy_keys = sorted({k for r in good for k in (r.get("energy_J") or {})})
    return {
        "label": label,
        "mode": mode,
        "device": parts[1] if len(parts) > 1 else "?",
        "network": parts[2] if len(parts) > 2 else "none",
        "channels": channels,
        "requests": len(rows),
        "ok": len(good),
        "failed": len(rows) - len(good),
        "accuracy": (sum(bool(r.get("correct")) for r in good) / len(good)) if good else float("nan"),
        "latency_ms": {
            s: percentiles([r[f"{s}_ms"] for r in good if f"{s}_ms" in r]) for s in (*BENCH_STAGES, "total")
        },
        "energy_J": {k: percentiles([r["energy_J"][k] for r in good])["mean"] for k in energy_keys},
        "payload_bytes": percentiles([r["payload_bytes"] for r in good if "payload_bytes" in r])["mean"],
    }


def load_workers(path: Path, listed: list[dict[str, Any]]) -> list[BenchWorker]:
    """The bench's workers: those listed in summary.json first (in order), then any other folder."""
    by_label = {w["label"]: w for w in listed if isinstance(w, dict) and "label" in w}
    root = path / WORKERS_DIR
    found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    workers = []
    for label in [*by_label, *(f for f in found if f not in by_label)]:
        folder = root / label
        rows = RunFolder(folder).read(REQUESTS_FILE)
        summary = _json(folder / "summary.json")
        missing = [f for f in (REQUESTS_FILE, "summary.json", TRACE_FILE) if not (folder / f).is_file()]
        partial = False
        if not isinstance(summary, dict):
            summary = by_label.get(label)
            if summary is None:
                if not rows:
                    workers.append(BenchWorker(label, {"label": label}, missing=missing, partial=True))
                    continue
                summary, partial = summarise_requests(label, rows), True
        trace = _json(folder / TRACE_FILE)
        workers.append(
            BenchWorker(label, summary, rows, trace if isinstance(trace, dict) else None, partial, missing)
        )
    return workers


def load_run(path: Path | str) -> RunData:
    """Read a run folder; a UserError when it is not a run folder of fedsim run, edge train or edge bench."""
    path = Path(path)
    folder = RunFolder(path)
    kind = next((k for k, f in KIND_FILES.items() if (path / f).is_file()), None)
    if kind is None:
        raise UserError(
            f"{path}: not a run folder; expected it to contain {SCENARIO_FILE} ('fedsim run'), "
            f"{EXPERIMENT_FILE} ('fedsim edge train') or {BENCH_FILE} ('fedsim edge bench')"
        )
    cfg_file = path / KIND_FILES[kind]
    text = cfg_file.read_text()
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        config = {}
    try:
        summary = folder.summary()
    except (json.JSONDecodeError, OSError):
        summary = {}
    summary = summary if isinstance(summary, dict) else {}
    evaluate = None
    if (path / EVALUATE_FILE).is_file():
        try:
            evaluate = json.loads((path / EVALUATE_FILE).read_text())
        except json.JSONDecodeError:
            evaluate = None
    workers: list[BenchWorker] = []
    comparison = None
    if kind == "edge-bench":
        workers = load_workers(path, summary.get("workers") or [])
        comparison = _json(path / COMPARISON_FILE)
        if not isinstance(comparison, list):
            stored = summary.get("comparison")
            comparison = stored if isinstance(stored, list) else None
    return RunData(
        path=path,
        kind=kind,
        config_text=text,
        config=config if isinstance(config, dict) else {},
        summary=summary,
        metrics=folder.read(METRICS_FILE),
        clients=folder.read(CLIENTS_FILE),
        results=folder.read(RESULTS_FILE),
        evaluate=evaluate,
        workers=workers,
        comparison=comparison,
    )


__all__ = [
    "BENCH_FILE",
    "BENCH_STAGES",
    "EVALUATE_FILE",
    "EXPERIMENT_FILE",
    "RESULTS_FILE",
    "SUMMARY_FILE",
    "BenchWorker",
    "RunData",
    "load_run",
]
