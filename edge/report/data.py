"""Edge training and edge bench run folders, read for the report.

An edge bench folder (``fedsim edge bench``) holds one sub-folder per worker configuration;
each is read into a :class:`BenchWorker`. A worker that was cut off before writing its
``summary.json`` gets one computed from the rows of its ``requests.jsonl`` (marked
``partial``), so an interrupted bench still shows what it measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsim.edge.bench_files import (
    BENCH_FILE,
    BENCH_STAGES,
    COMPARISON_FILE,
    REQUESTS_FILE,
    TRACE_FILE,
    WORKERS_DIR,
)
from fedsim.report.data import RunData, RunKind, percentiles, read_json, register_kind
from fedsim.runstore import RunFolder

# What edge/train.py and edge/evaluate.py write (not imported: they import torch).
EXPERIMENT_FILE = "experiment.yaml"
RESULTS_FILE = "results.jsonl"
EVALUATE_FILE = "evaluate.json"


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
        summary = read_json(folder / "summary.json")
        missing = [f for f in (REQUESTS_FILE, "summary.json", TRACE_FILE) if not (folder / f).is_file()]
        partial = False
        if not isinstance(summary, dict):
            summary = by_label.get(label)
            if summary is None:
                if not rows:
                    workers.append(BenchWorker(label, {"label": label}, missing=missing, partial=True))
                    continue
                summary, partial = summarise_requests(label, rows), True
        trace = read_json(folder / TRACE_FILE)
        workers.append(
            BenchWorker(label, summary, rows, trace if isinstance(trace, dict) else None, partial, missing)
        )
    return workers


@dataclass
class EdgeRun(RunData):
    """A BottleFit training run (``fedsim edge train``): its results rows and evaluation."""

    results: list[dict[str, Any]] = field(default_factory=list)
    evaluate: dict[str, Any] | None = None

    @property
    def method(self) -> str:
        """The experiment's method (bottlefit unless it says otherwise)."""
        return str(self.config.get("method") or "bottlefit")

    def read_more(self) -> None:
        """results.jsonl and evaluate.json."""
        self.results = RunFolder(self.path).read(RESULTS_FILE)
        evaluate = read_json(self.path / EVALUATE_FILE)
        self.evaluate = evaluate if isinstance(evaluate, dict) else None


@dataclass
class BenchRun(RunData):
    """An edge bench (``fedsim edge bench``): its workers and split's comparison."""

    workers: list[BenchWorker] = field(default_factory=list)
    comparison: list[dict[str, Any]] | None = None

    @property
    def method(self) -> str:
        """Always ``bench``."""
        return "bench"

    def read_more(self) -> None:
        """workers/*/ and comparison.json (else the comparison stored in summary.json)."""
        self.workers = load_workers(self.path, self.summary.get("workers") or [])
        comparison = read_json(self.path / COMPARISON_FILE)
        if not isinstance(comparison, list):
            stored = self.summary.get("comparison")
            comparison = stored if isinstance(stored, list) else None
        self.comparison = comparison


register_kind("edge", RunKind(EXPERIMENT_FILE, "fedsim edge train", EdgeRun), "edge training (BottleFit)")
register_kind("edge-bench", RunKind(BENCH_FILE, "fedsim edge bench", BenchRun), "edge bench")
