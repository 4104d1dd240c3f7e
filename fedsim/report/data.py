"""Reading a run folder for the report, tolerant of missing files.

A kind of run folder (:class:`RunKind`, registered in :data:`RUN_KINDS`) is marked by its
configuration file and read into its :class:`RunData` class; the federated kind is
registered here, others by their packages (loaded through :mod:`fedsim.plugins`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fedsim import plugins
from fedsim.errors import UserError
from fedsim.registry import Registry
from fedsim.runstore import CLIENTS_FILE, METRICS_FILE, SCENARIO_FILE, SUMMARY_FILE, RunFolder


@dataclass
class RunData:
    """What the figures read from one run folder; absent files give empty values.

    A kind with files of its own reads them into a subclass (:meth:`read_more`)."""

    path: Path
    kind: str  # the name of its RunKind
    config_text: str
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    clients: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The run folder's name."""
        return self.path.name

    @property
    def method(self) -> str:
        """The algorithm's name, the key of the run's colour (a kind's subclass may say otherwise)."""
        algo = self.config.get("algorithm") or {}
        return str(algo.get("name", "?")) if isinstance(algo, dict) else str(algo)

    def read_more(self) -> None:
        """Read the files of the run's kind beyond the common ones (nothing here)."""

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


@dataclass(frozen=True)
class RunKind:
    """A kind of run folder: the configuration file that marks it and how it is read."""

    config_file: str
    command: str  # what writes such folders, quoted in messages
    data: type[RunData] = RunData


#: kind name -> its RunKind
RUN_KINDS: Registry[RunKind] = Registry("kind of run folder")
#: registration order: a folder is of the first kind whose configuration file it has
KIND_ORDER: list[str] = []


def register_kind(name: str, kind: RunKind, summary: str = "") -> None:
    """Register a kind of run folder (after those already registered)."""
    RUN_KINDS.register(name, summary=summary or kind.command)(kind)
    KIND_ORDER.append(name)


register_kind("fl", RunKind(SCENARIO_FILE, "fedsim run"))


def read_json(file: Path) -> Any:
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


def load_run(path: Path | str) -> RunData:
    """Read a run folder; a UserError when it is not a run folder of any registered kind."""
    plugins.load("report")
    path = Path(path)
    folder = RunFolder(path)
    name = next((k for k in KIND_ORDER if (path / RUN_KINDS.get(k).config_file).is_file()), None)
    if name is None:
        marks = [f"{RUN_KINDS.get(k).config_file} ('{RUN_KINDS.get(k).command}')" for k in KIND_ORDER]
        expected = " or ".join([", ".join(marks[:-1]), marks[-1]] if len(marks) > 1 else marks)
        raise UserError(f"{path}: not a run folder; expected it to contain {expected}")
    kind = RUN_KINDS.get(name)
    text = (path / kind.config_file).read_text()
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        config = {}
    try:
        summary = folder.summary()
    except (json.JSONDecodeError, OSError):
        summary = {}
    run = kind.data(
        path=path,
        kind=name,
        config_text=text,
        config=config if isinstance(config, dict) else {},
        summary=summary if isinstance(summary, dict) else {},
        metrics=folder.read(METRICS_FILE),
        clients=folder.read(CLIENTS_FILE),
    )
    run.read_more()
    return run


__all__ = [
    "RUN_KINDS",
    "SUMMARY_FILE",
    "RunData",
    "RunKind",
    "load_run",
    "percentiles",
    "register_kind",
]
