"""When each client is reachable, in virtual seconds since the start of the run.

Every model answers two questions about partition ``pid`` at virtual time ``t``:

- :meth:`Availability.off_at` -- ``None`` if the client is off at ``t``; otherwise the
  time it next goes off (``inf``: never). A client selected at ``t`` drops out if that
  time comes before it finishes.
- :meth:`Availability.next_on` -- the first time ``>= t`` it is on (``inf``: never).

Models are pure functions of (seed, pid, t), so a resumed run sees the same timeline.

``always``
    every client is always on.
``markov``
    each client alternates on and off periods drawn from exponential distributions
    with means ``mean_on_s`` and ``mean_off_s`` (a two-state continuous-time Markov
    chain), starting in its stationary distribution (on with probability
    ``mean_on_s / (mean_on_s + mean_off_s)``); one generator per client, seeded from
    (seed, pid).
``trace``
    a CSV file of availability intervals, see :func:`read_trace`.
"""

from __future__ import annotations

import bisect
import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from fedsim.errors import UserError

#: Seed-sequence tag of the Markov chains (keeps their draws apart from other uses of the seed).
MARKOV_TAG = 0xA7A1
#: Durations drawn per refill of a client's Markov chain.
_BLOCK = 32

TRACE_HEADER = ["partition_id", "start_s", "end_s"]


class Availability(Protocol):
    """When clients are on."""

    def off_at(self, pid: int, t: float) -> float | None:
        """``None`` if ``pid`` is off at ``t``, else when it next goes off (``inf``: never)."""

    def next_on(self, pid: int, t: float) -> float:
        """The first time ``>= t`` at which ``pid`` is on (``inf``: never)."""


class AlwaysOn:
    """Every client is always on."""

    def off_at(self, pid: int, t: float) -> float | None:
        """Never goes off."""
        return math.inf

    def next_on(self, pid: int, t: float) -> float:
        """On now."""
        return t


class _Intervals:
    """Lookups in on-intervals ``[starts[i], ends[i])``, sorted and disjoint; ``starts``
    may hold one more entry than ``ends`` (the next on-period, not yet ended)."""

    @staticmethod
    def off_at(starts: list[float], ends: list[float], t: float) -> float | None:
        i = bisect.bisect_right(starts, t) - 1
        return ends[i] if 0 <= i < len(ends) and t < ends[i] else None

    @staticmethod
    def next_on(starts: list[float], ends: list[float], t: float) -> float:
        i = bisect.bisect_right(starts, t) - 1
        if 0 <= i < len(ends) and t < ends[i]:
            return t
        return starts[i + 1] if i + 1 < len(starts) else math.inf


class MarkovOnOff:
    """Per-client two-state on/off chain with exponential holding times."""

    def __init__(self, seed: int, mean_on_s: float, mean_off_s: float) -> None:
        self.seed, self.mean_on, self.mean_off = seed, mean_on_s, mean_off_s
        self._rng: dict[int, np.random.Generator] = {}
        self._starts: dict[int, list[float]] = {}
        self._ends: dict[int, list[float]] = {}

    def _extend(self, pid: int, t: float) -> tuple[list[float], list[float]]:
        """The client's on-intervals, generated at least past ``t``."""
        if pid not in self._rng:
            rng = np.random.default_rng([self.seed, pid, MARKOV_TAG])
            p_on = self.mean_on / (self.mean_on + self.mean_off)
            self._rng[pid] = rng
            # A chain started on at 0, or one started off that turns on after an off period.
            first = 0.0 if rng.random() < p_on else float(rng.exponential(self.mean_off))
            self._starts[pid], self._ends[pid] = [first], []
        rng, starts, ends = self._rng[pid], self._starts[pid], self._ends[pid]
        while not ends or ends[-1] <= t:  # invariant: len(starts) == len(ends) + 1
            on = rng.exponential(self.mean_on, _BLOCK)
            off = rng.exponential(self.mean_off, _BLOCK)
            for a, b in zip(on, off, strict=True):
                ends.append(starts[-1] + float(a))
                starts.append(ends[-1] + float(b))
        return starts, ends

    def off_at(self, pid: int, t: float) -> float | None:
        """End of the on-period holding ``t``, or ``None``."""
        return _Intervals.off_at(*self._extend(pid, t), t)

    def next_on(self, pid: int, t: float) -> float:
        """``t`` if on, else the start of the next on-period."""
        return _Intervals.next_on(*self._extend(pid, t), t)


class TraceAvailability:
    """On exactly inside the intervals of a trace file (see :func:`read_trace`)."""

    def __init__(self, intervals: dict[int, list[tuple[float, float]]]) -> None:
        self._starts = {p: [a for a, _ in iv] for p, iv in intervals.items()}
        self._ends = {p: [b for _, b in iv] for p, iv in intervals.items()}

    def off_at(self, pid: int, t: float) -> float | None:
        """End of the interval holding ``t``, or ``None`` (never on without intervals)."""
        return _Intervals.off_at(self._starts.get(pid, []), self._ends.get(pid, []), t)

    def next_on(self, pid: int, t: float) -> float:
        """``t`` if inside an interval, else the next interval's start."""
        return _Intervals.next_on(self._starts.get(pid, []), self._ends.get(pid, []), t)


def read_trace(path: Path, num_clients: int) -> dict[int, list[tuple[float, float]]]:
    """Read an availability trace: CSV with the header ``partition_id,start_s,end_s``.

    Each further line is one interval ``[start_s, end_s)`` during which client
    ``partition_id`` (0 .. clients.num - 1) is on, in virtual seconds from the start of
    the run; a client is off outside its intervals (never on if it has none).
    Overlapping or touching intervals of a client are merged. Blank lines and lines
    starting with ``#`` are skipped.

    Raises
    ------
    UserError
        One line ``PATH, line N: what is wrong`` for the first problem found.
    """
    if not path.is_file():
        raise UserError(
            f"{path}: no such trace file; expected a CSV file with header {','.join(TRACE_HEADER)}"
        )
    per: dict[int, list[tuple[float, float]]] = {}
    with open(path, newline="") as fh:
        lines = [(n, row) for n, row in enumerate(csv.reader(fh), 1) if row and not row[0].startswith("#")]
    if not lines or [c.strip() for c in lines[0][1]] != TRACE_HEADER:
        where = f"line {lines[0][0]}" if lines else "line 1"
        raise UserError(f"{path}, {where}: expected the header {','.join(TRACE_HEADER)}")
    for n, row in lines[1:]:
        where = f"{path}, line {n}"
        if len(row) != 3:
            raise UserError(f"{where}: expected 3 fields partition_id,start_s,end_s (got {len(row)})")
        try:
            pid, start, end = int(row[0]), float(row[1]), float(row[2])
        except ValueError:
            raise UserError(f"{where}: expected an integer and two numbers (got {','.join(row)!r})") from None
        if not 0 <= pid < num_clients:
            raise UserError(f"{where}: partition_id {pid} is outside 0..{num_clients - 1} (clients.num)")
        if not 0 <= start < end:
            raise UserError(f"{where}: expected 0 <= start_s < end_s (got {start}, {end})")
        per.setdefault(pid, []).append((start, end))
    merged: dict[int, list[tuple[float, float]]] = {}
    for pid, ivs in per.items():
        out: list[tuple[float, float]] = []
        for a, b in sorted(ivs):
            if out and a <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], b))
            else:
                out.append((a, b))
        merged[pid] = out
    return merged


#: availability model name -> builder(system spec, seed, number of clients)
AVAILABILITY: dict[str, Callable[..., Availability]] = {
    "always": lambda spec, seed, num: AlwaysOn(),
    "markov": lambda spec, seed, num: MarkovOnOff(seed, spec.mean_on_s, spec.mean_off_s),
    "trace": lambda spec, seed, num: TraceAvailability(read_trace(Path(spec.trace), num)),
}
