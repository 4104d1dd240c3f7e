"""A rich progress bar over the rounds of a run: round, latest accuracy, ETA.

Shown only on a terminal (and not with ``--quiet``). It is a round-loop callback
for the in-process runtime, and is fed from metrics.jsonl for runtimes whose
server runs in another process.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Self

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


def progress_bar(unit: str, console: Console | None = None, eta: bool = False) -> Progress:
    """A rich bar: description, bar, done/total ``unit``, the task's ``info`` field, time (and ETA)."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{unit}  {{task.fields[info]}}"),
        TimeElapsedColumn(),
    ]
    if eta:
        columns += [TextColumn("ETA"), TimeRemainingColumn()]
    return Progress(*columns, console=console)


class ProgressContext:
    """A ``with`` block that shows ``self._progress`` (when there is one) while it runs."""

    _progress: Progress | None = None

    def __enter__(self) -> Self:
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress:
            self._progress.stop()


class RoundProgress(ProgressContext):
    """Progress bar over rounds; a no-op when disabled."""

    #: a round running longer than this shows its clients done / sent (seconds)
    CLIENTS_AFTER_S = 2.0

    def __init__(
        self, name: str, total: int, start: int = 0, enabled: bool = True, console: Console | None = None
    ) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._round_t0 = time.monotonic()
        self._info = ""
        if enabled:
            self._progress = progress_bar("rounds", console, eta=True)
            self._task = self._progress.add_task(name, total=total, completed=start, info="")

    def update(self, row: dict[str, Any]) -> None:
        """Advance to the round of a metrics row."""
        self._round_t0 = time.monotonic()
        self._info = accuracy_text(row)
        if self._progress:
            self._progress.update(self._task, completed=row["round"], info=self._info)

    def clients_done(self, done: int, total: int) -> None:
        """Within a long round: how many of the clients sent messages have answered."""
        if self._progress and time.monotonic() - self._round_t0 > self.CLIENTS_AFTER_S:
            info = f"{self._info}  clients {done}/{total}".strip()
            self._progress.update(self._task, info=info)

    def on_round_end(self, result: RoundResult, loop: RoundLoop) -> None:
        """Round-loop callback."""
        self.update(result.metrics)
