"""The two kinds of error fedsim reports in one line.

- :class:`UserError`: a problem with the user's input (a bad key, a bad value, a missing
  file): one line naming it and what was expected, exit code 2, nothing written.
- :class:`RunFailed`: a run that could not finish for another reason (Flower refused the
  run, a SuperLink died, Ray could not start, a client crashed): one line naming what
  failed and the log file to read, exit code 1; the run folder is marked ``failed`` with
  the reason. ``fedsim --debug`` adds the traceback.
"""

from __future__ import annotations

import math
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input: one line naming it and what was expected."""


class RunFailed(RuntimeError):
    """A run that could not finish; ``log`` is the file that tells why (if any)."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.log = log

    def __str__(self) -> str:
        text = super().__str__()
        return text if self.log is None else f"{text}; see {self.log}"


class ConfigError(UserError):
    """An experiment file or ``--set`` override that does not validate."""


def finite_number(text: str, where: str, what: str = "a number") -> float:
    """``text`` as a finite float, else a :class:`UserError` ``"{where}: expected {what}, got
    '{text}'"`` (a cell of a user's CSV file, say)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UserError(f"{where}: expected {what}, got {text!r}")
    return value
