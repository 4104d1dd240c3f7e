"""The run folder: resolved scenario, metrics, per-client rows, checkpoints, summary.

Layout (all plain files; ``pandas.read_json(path, lines=True)`` reads the JSONL)::

    RUN/
      scenario.yaml      the resolved scenario (every default filled in)
      metrics.jsonl      one line per round (round 0: the initial model)
      clients.jsonl      one line per client per round and phase (train / evaluate)
      summary.json       status, rounds completed, final and best metrics, versions
      checkpoints/round-NNNN.pt   everything needed to continue (see fedsim.server.checkpoint)
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from fedsim.config import Document, Scenario, parse, read_yaml
from fedsim.errors import UserError
from fedsim.files import write_atomic

SCENARIO_FILE = "scenario.yaml"
METRICS_FILE = "metrics.jsonl"
CLIENTS_FILE = "clients.jsonl"
SUMMARY_FILE = "summary.json"
#: While a deployment run waits for its SuperNodes: how many are connected, of how many.
WAITING_FILE = "nodes.json"
CHECKPOINT_DIR = "checkpoints"


def new_run_dir(doc: Document, suffix: str = "") -> Path:
    """A fresh folder ``OUTPUT/NAME[SUFFIX]-YYYYmmdd-HHMMSS[-N]`` (never an existing one), absolute.

    A relative ``output.dir`` is taken from the working directory here, once: every
    runtime then hands the same absolute folder on (Flower's processes work elsewhere).
    """
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = doc.output.dir.expanduser().absolute() / f"{doc.name}{suffix}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


class RunFolder:
    """Reading and writing one run folder."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser().absolute()

    # -- creation and loading ---------------------------------------------------------

    def create(self, scenario: Scenario) -> None:
        """Make the folder and write the resolved scenario."""
        self.path.mkdir(parents=True, exist_ok=False)
        (self.path / CHECKPOINT_DIR).mkdir()
        (self.path / SCENARIO_FILE).write_text(scenario.to_yaml())

    def scenario(self) -> Scenario:
        """The resolved scenario stored in the folder."""
        file = self.path / SCENARIO_FILE
        if not file.is_file():
            raise UserError(f"{self.path}: not a fedsim run folder; expected it to contain {SCENARIO_FILE}")
        # the schema only: its components were checked when the run was created
        return cast(Scenario, parse(read_yaml(file), str(file)))

    # -- rows -----------------------------------------------------------------------------

    def append(self, file: str, rows: list[dict[str, Any]]) -> None:
        """Append rows to a JSONL file (one flush per call)."""
        if not rows:
            return
        with open(self.path / file, "a") as fh:
            fh.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

    def read(self, file: str) -> list[dict[str, Any]]:
        """All rows of a JSONL file ([] when absent); a torn last line is ignored."""
        target = self.path / file
        if not target.exists():
            return []
        rows = []
        for line in target.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return rows

    def truncate_after(self, last_round: int) -> None:
        """Drop rows of rounds after ``last_round`` (before resuming from it)."""
        for file in (METRICS_FILE, CLIENTS_FILE):
            rows = [r for r in self.read(file) if r["round"] <= last_round]
            write_atomic(self.path / file, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write summary.json atomically."""
        write_atomic(self.path / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")

    def summary(self) -> dict[str, Any]:
        """summary.json ({} when absent)."""
        file = self.path / SUMMARY_FILE
        return json.loads(file.read_text()) if file.exists() else {}

    def write_waiting(self, connected: int, needed: int, wait_s: float) -> None:
        """Record how many nodes are connected while the run waits for them (nodes.json)."""
        doc = {"connected": connected, "needed": needed, "wait_s": wait_s}
        write_atomic(self.path / WAITING_FILE, json.dumps(doc) + "\n")

    def waiting(self) -> dict[str, Any] | None:
        """What :meth:`write_waiting` wrote last (None before it wrote)."""
        file = self.path / WAITING_FILE
        try:
            return json.loads(file.read_text())
        except (OSError, ValueError):
            return None

    # -- checkpoints ----------------------------------------------------------------------

    def checkpoint_path(self, server_round: int) -> Path:
        """Where the checkpoint of a round goes."""
        return self.path / CHECKPOINT_DIR / f"round-{server_round:04d}.pt"

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint of the latest round, if any."""
        found = sorted((self.path / CHECKPOINT_DIR).glob("round-*.pt"))
        return found[-1] if found else None
