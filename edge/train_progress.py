"""Progress of a training run: rich bars per teacher and stage, or one log line per epoch."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import Progress

from fedsim.progress import ProgressContext, progress_bar
from fedsim.training import Stats


class TrainProgress(ProgressContext):
    """Progress bars (teacher epochs, then each C and stage) and log lines.

    Parameters
    ----------
    console : Console
        Where to print.
    bars : bool
        Show rich progress bars (only on a terminal, and not with ``--quiet``).
    log : bool
        Print one line per finished teacher and stage (not with ``--quiet``).
    """

    def __init__(self, console: Console, bars: bool, log: bool) -> None:
        self.console = console
        self.log = log
        self._progress: Progress | None = None
        if bars:
            self._progress = progress_bar("epochs", console)
        self._task: Any = None
        self._description, self._total = "", 0

    def start(self, description: str, total: int, completed: int = 0) -> None:
        """A new bar (one per teacher training and per stage)."""
        self._description, self._total = description, total
        if self._progress:
            self._task = self._progress.add_task(description, total=total, completed=completed, info="")

    def epoch(self, epoch: int, stats: Stats) -> None:
        """Advance the current bar to ``epoch + 1`` epochs done (a log line when there are no bars)."""
        info = f"loss {stats.loss:.4f}  train acc {stats.accuracy:.3f}"
        if self._progress and self._task is not None:
            self._progress.update(self._task, completed=epoch + 1, info=info)
        elif not self._progress:
            self.line(f"{self._description}: epoch {epoch + 1}/{self._total}  {info}")

    def line(self, text: str) -> None:
        """A log line (kept above the bars)."""
        if self.log:
            self.console.print(text, highlight=False)
