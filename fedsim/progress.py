"""A rich progress bar over the rounds of a run: round, latest accuracy, ETA.

Shown only on a terminal (and not with ``--quiet``). It is a round-loop callback
for the in-process runtime, and is fed from metrics.jsonl for runtimes whose
server runs in another process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from fedsim.server.rounds import RoundLoop, RoundResult


def accuracy_text(row: dict[str, Any]) -> str:
    """The headline accuracy of a metrics row, e.g. ``acc 0.912``."""
    for key, label in (("server_accuracy", "acc"), ("clients_accuracy", "local acc")):
        if key in row:
            return f"{label} {row[key]:.3f}"
    return ""


class RoundProgress:
    """Progress bar over rounds; a no-op when disabled."""

    def __init__(
        self, name: str, total: int, start: int = 0, enabled: bool = True, console: Console | None = None
    ) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("rounds  {task.fields[acc]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._task = self._progress.add_task(name, total=total, completed=start, acc="")

    def __enter__(self) -> RoundProgress:
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress:
            self._progress.stop()

    def update(self, row: dict[str, Any]) -> None:
        """Advance to the round of a metrics row."""
        if self._progress:
            self._progress.update(self._task, completed=row["round"], acc=accuracy_text(row))

    def on_round_end(self, result: RoundResult, loop: RoundLoop) -> None:
        """Round-loop callback."""
        self.update(result.metrics)
