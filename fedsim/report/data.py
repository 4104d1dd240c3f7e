"""Reading a run folder (federated or edge) for the report, tolerant of missing files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedsim.errors import UserError
from fedsim.runstore import CLIENTS_FILE, METRICS_FILE, SCENARIO_FILE, SUMMARY_FILE, RunFolder

EXPERIMENT_FILE = "experiment.yaml"
RESULTS_FILE = "results.jsonl"
EVALUATE_FILE = "evaluate.json"


@dataclass
class RunData:
    """Everything the figures read from one run folder; absent files give empty values."""

    path: Path
    kind: str  # "fl" or "edge"
    config_text: str
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    clients: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    evaluate: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """The run folder's name."""
        return self.path.name

    @property
    def method(self) -> str:
        """Algorithm (FL) or method (edge) name: the key of the run's colour."""
        if self.kind == "edge":
            return str(self.config.get("method") or "bottlefit")
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


def load_run(path: Path | str) -> RunData:
    """Read a run folder; a UserError when it is neither a FL nor an edge run folder."""
    path = Path(path)
    folder = RunFolder(path)
    if (path / SCENARIO_FILE).is_file():
        kind, cfg_file = "fl", path / SCENARIO_FILE
    elif (path / EXPERIMENT_FILE).is_file():
        kind, cfg_file = "edge", path / EXPERIMENT_FILE
    else:
        raise UserError(
            f"{path}: not a run folder; expected it to contain {SCENARIO_FILE} ('fedsim run') "
            f"or {EXPERIMENT_FILE} ('fedsim edge train')"
        )
    text = cfg_file.read_text()
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        config = {}
    try:
        summary = folder.summary()
    except (json.JSONDecodeError, OSError):
        summary = {}
    evaluate = None
    if (path / EVALUATE_FILE).is_file():
        try:
            evaluate = json.loads((path / EVALUATE_FILE).read_text())
        except json.JSONDecodeError:
            evaluate = None
    return RunData(
        path=path,
        kind=kind,
        config_text=text,
        config=config if isinstance(config, dict) else {},
        summary=summary if isinstance(summary, dict) else {},
        metrics=folder.read(METRICS_FILE),
        clients=folder.read(CLIENTS_FILE),
        results=folder.read(RESULTS_FILE),
        evaluate=evaluate,
    )


__all__ = ["EVALUATE_FILE", "EXPERIMENT_FILE", "RESULTS_FILE", "SUMMARY_FILE", "RunData", "load_run"]
