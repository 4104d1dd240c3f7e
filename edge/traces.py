"""Bandwidth/RTT traces for the edge testbed: a link whose rates and RTT change over time.

A :class:`Trace` is a table of rows ``(t_s, up_mbps, down_mbps, rtt_ms)``: each row is in
force from its time until the next row's (the last one for ``step_s`` seconds), and the
whole trace replays in a loop. On disk it is a CSV file with exactly the header
``t_s,up_mbps,down_mbps,rtt_ms`` (:func:`read_trace`, :func:`write_trace`).

:func:`markov_trace` makes one from :class:`~fedsim.system.profiles.NetworkProfile` links with
a seeded Markov chain; the shipped traces (:data:`TRACES`, recipes in :func:`shipped_recipes`)
are made so and ``python -m fedsim.edge.traces`` rewrites them. :class:`fedsim.edge.shaper.Shaper`
replays a trace on the wall clock (its ``trace`` argument).
"""

from __future__ import annotations

import bisect
import csv
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.errors import UserError, finite_number
from fedsim.system.profiles import NETWORKS, NetworkProfile

#: The CSV header of a trace file, in this order.
HEADER = ("t_s", "up_mbps", "down_mbps", "rtt_ms")
_HEADER = ",".join(HEADER)
#: Folder of the shipped trace files (package data of ``fedsim.edge.trace_data``).
DATA = Path(__file__).resolve().parent / "trace_data"
#: A deep fade of an LTE link (local to the ``lte-fades`` trace, not in ``NETWORKS``).
LTE_FADE = NetworkProfile("lte-fade", 0.5, 2.0, 200.0, 0.0, 0.0, "assumption: LTE in a deep fade")


@dataclass(frozen=True)
class LinkState:
    """A link's rates and round-trip time at one moment (Mbit/s, Mbit/s, ms)."""

    up_mbps: float
    down_mbps: float
    rtt_ms: float


@dataclass(frozen=True)
class Trace:
    """A link over time, replayed in a loop.

    Attributes
    ----------
    name : str
        Name (the shipped name, or the file's stem).
    times : tuple of float
        Start of each row in seconds: 0.0 first, strictly increasing.
    states : tuple of LinkState
        The link in force from each time on (as many as ``times``).
    step_s : float
        How long the last row lasts.
    """

    name: str
    times: tuple[float, ...]
    states: tuple[LinkState, ...]
    step_s: float

    def __post_init__(self) -> None:
        if not self.times or len(self.times) != len(self.states):
            raise ValueError(f"trace {self.name!r}: expected as many times as states, at least one")
        if self.times[0] != 0.0 or any(b <= a for a, b in zip(self.times, self.times[1:], strict=False)):
            raise ValueError(f"trace {self.name!r}: times must start at 0 and strictly increase")
        if not self.step_s > 0:
            raise ValueError(f"trace {self.name!r}: step_s must be > 0, got {self.step_s}")

    @property
    def duration(self) -> float:
        """Seconds before the trace starts again: ``times[-1] + step_s``."""
        return self.times[-1] + self.step_s

    def at(self, t: float) -> LinkState:
        """The row in force ``t`` seconds after the start, wrapping around :attr:`duration` (t >= 0)."""
        if t < 0:
            raise ValueError(f"t must be >= 0, got {t}")
        return self.states[bisect.bisect_right(self.times, t % self.duration) - 1]

    def profile_at(self, t: float, base: NetworkProfile | None = None) -> NetworkProfile:
        """A :class:`NetworkProfile` with the rates and RTT at ``t``; jitter and loss from ``base`` (or 0)."""
        s = self.at(t)
        jitter, loss = (base.jitter_ms, base.loss) if base is not None else (0.0, 0.0)
        source = f"trace {self.name} at {t:g} s"
        return NetworkProfile(self.name, s.up_mbps, s.down_mbps, s.rtt_ms, jitter, loss, source)

    def describe(self) -> dict[str, Any]:
        """Name, loop length, rows and time-weighted means, for a result file."""
        mean = {f"mean_{k}": v for k, v in asdict(self.mean()).items()}
        return {"trace": self.name, "trace_duration_s": self.duration, "trace_rows": len(self.times), **mean}

    def mean(self) -> LinkState:
        """The time-weighted mean of each field over one loop."""
        weights = np.diff([*self.times, self.duration])
        rows = np.array([[s.up_mbps, s.down_mbps, s.rtt_ms] for s in self.states])
        up, down, rtt = (float(v) for v in weights @ rows / weights.sum())
        return LinkState(up, down, rtt)


# ------------------------------------------------------------------------------ files


def read_trace(path: str | Path) -> Trace:
    """Read a trace CSV (header ``t_s,up_mbps,down_mbps,rtt_ms``); ``step_s`` is the median gap.

    Raises
    ------
    UserError
        One line with the file, the line and what was expected: a missing file, another
        header, a row that is not four numbers, ``t_s`` not starting at 0 or not strictly
        increasing, a bandwidth <= 0, an RTT < 0, or no rows.
    """
    path, header = Path(path), _HEADER
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else type(exc).__name__
        raise UserError(f"{path}: cannot read the trace ({reason}); expected a CSV file") from None
    lines = text.splitlines()
    if not lines or lines[0].strip() != header:
        got = repr(lines[0].strip()) if lines else "an empty file"
        raise UserError(f"{path}:1: expected the header {header}, got {got}")
    times: list[float] = []
    states: list[LinkState] = []
    for lineno, row in enumerate(csv.reader(lines[1:]), start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != len(HEADER):
            raise UserError(f"{path}:{lineno}: expected 4 numbers ({header}), got {len(row)} fields")
        t, up, down, rtt = (
            finite_number(v.strip(), f"{path}:{lineno}: {c}") for c, v in zip(HEADER, row, strict=True)
        )
        if not times and t != 0:
            raise UserError(f"{path}:{lineno}: t_s: expected 0 on the first row, got {t:g}")
        if times and t <= times[-1]:
            raise UserError(f"{path}:{lineno}: t_s: expected more than the last ({times[-1]:g}), got {t:g}")
        for column, value in (("up_mbps", up), ("down_mbps", down)):
            if value <= 0:
                raise UserError(f"{path}:{lineno}: {column}: expected a bandwidth > 0, got {value:g}")
        if rtt < 0:
            raise UserError(f"{path}:{lineno}: rtt_ms: expected a round-trip time >= 0, got {rtt:g}")
        times.append(t)
        states.append(LinkState(up, down, rtt))
    if not times:
        raise UserError(f"{path}:2: expected at least one row after the header {header}")
    step = round(statistics.median(np.diff(times).tolist()), 9) if len(times) > 1 else 1.0
    return Trace(path.stem, tuple(times), tuple(states), float(step))


def _fmt(value: float) -> str:
    """At most 3 decimals, no trailing zeros: 300, 0.5, 18.903."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def write_trace(path: str | Path, trace: Trace) -> Path:
    """Write ``trace`` as a CSV :func:`read_trace` reads back (numbers to 3 decimals); the path."""
    path = Path(path)
    rows = [",".join(HEADER)]
    for t, s in zip(trace.times, trace.states, strict=True):
        rows.append(",".join(_fmt(v) for v in (t, s.up_mbps, s.down_mbps, s.rtt_ms)))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------- Markov chains


def markov_trace(
    name: str,
    states: dict[str, NetworkProfile],
    dwell_s: dict[str, float],
    duration_s: float,
    step_s: float,
    seed: int,
    start: str | None = None,
    variation: float = 0.15,
) -> Trace:
    """A seeded Markov chain over network profiles, one row every ``step_s`` seconds.

    Each step the chain leaves its state with probability ``step_s / dwell_s[state]`` (so
    it stays ``dwell_s`` seconds on average) for one of the other states, chosen uniformly.
    A row's bandwidths are the state's times one lognormal factor (sigma ``variation``,
    median 1, shared by up and down); its RTT the state's times an independent one. Values
    are rounded to 3 decimals, as :func:`write_trace` writes them.

    Parameters
    ----------
    name : str
        The trace's name.
    states : dict of str to NetworkProfile
        The chain's states (their jitter and loss are not used).
    dwell_s : dict of str to float
        Mean seconds in each state (a key for every state, each >= ``step_s``).
    duration_s, step_s : float
        Length of the trace and of a row in seconds (``ceil(duration_s / step_s)`` rows).
    seed : int
        Seeds :func:`numpy.random.default_rng`: the same arguments give the same trace.
    start : str, optional
        The first state; by default the first key of ``states``.
    variation : float
        Sigma of the lognormal factors (0: the profiles' values exactly).

    Raises
    ------
    UserError
        For a missing or bad dwell time, an unknown start, or a bad length or variation.
    """
    names = list(states)
    start = names[0] if start is None and names else start
    if start not in states:
        raise UserError(f"markov trace {name!r}: start: expected one of {', '.join(names)}, got {start!r}")
    if set(dwell_s) != set(names) or any(not dwell_s[n] >= step_s for n in names):
        raise UserError(f"markov trace {name!r}: dwell_s: expected seconds >= step_s for each of {names}")
    if not (step_s > 0 and duration_s >= step_s and variation >= 0):
        raise UserError(f"markov trace {name!r}: expected duration_s >= step_s > 0 and variation >= 0")
    rows = math.ceil(duration_s / step_s - 1e-9)
    rng = np.random.default_rng(seed)
    leave, pick = rng.random(rows), rng.integers(0, max(1, len(names) - 1), rows)
    bw, rtt = rng.lognormal(0.0, variation, rows), rng.lognormal(0.0, variation, rows)
    current = names.index(start)
    out: list[LinkState] = []
    for i in range(rows):
        if i and len(names) > 1 and leave[i] < step_s / dwell_s[names[current]]:
            current = int(pick[i]) + (int(pick[i]) >= current)  # uniform among the others
        p = states[names[current]]
        r = (round(p.uplink_mbps * bw[i], 3), round(p.downlink_mbps * bw[i], 3), round(p.rtt_ms * rtt[i], 3))
        out.append(LinkState(max(r[0], 0.001), max(r[1], 0.001), r[2]))
    times = tuple(round(i * step_s, 3) for i in range(rows))
    return Trace(name, times, tuple(out), float(step_s))


def shipped_recipes() -> dict[str, dict[str, Any]]:
    """The shipped traces: name -> keyword arguments of :func:`markov_trace` (fixed seeds)."""
    wifi, lte, g3 = (NETWORKS.get(n) for n in ("wifi", "lte", "3g"))

    def recipe(seed: int, *dwell: tuple[NetworkProfile, float]) -> dict[str, Any]:
        states, dwell_s = {p.name: p for p, _ in dwell}, {p.name: s for p, s in dwell}
        return {"states": states, "dwell_s": dwell_s, "duration_s": 300.0, "step_s": 1.0, "seed": seed}

    return {
        "wifi-steady": recipe(1, (wifi, 300.0)),
        "lte-fades": recipe(2, (lte, 40.0), (LTE_FADE, 6.0)),
        "wifi-3g-alternating": recipe(3, (wifi, 30.0), (g3, 30.0)),
    }


#: The shipped traces: name -> CSV file.
TRACES: dict[str, Path] = {name: DATA / f"{name}.csv" for name in shipped_recipes()}


def resolve_trace(value: str | Path) -> Trace:
    """A shipped trace by name (:data:`TRACES`), or a trace CSV by path.

    Raises
    ------
    UserError
        For an unknown name or a missing file (one line with the shipped names), or a bad file.
    """
    key = str(value)
    if key in TRACES:
        return read_trace(TRACES[key])
    if Path(key).is_file():
        return read_trace(key)
    known = ", ".join(TRACES)
    raise UserError(f"unknown trace {key!r}; expected one of: {known}, or a CSV file with header {_HEADER}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fedsim.edge.traces [FOLDER]``: rewrite the shipped CSVs (into FOLDER if given)."""
    args = list(sys.argv[1:] if argv is None else argv)
    folder = Path(args[0]) if args else DATA
    folder.mkdir(parents=True, exist_ok=True)
    for name, recipe in shipped_recipes().items():
        print(write_trace(folder / f"{name}.csv", markov_trace(name, **recipe)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
