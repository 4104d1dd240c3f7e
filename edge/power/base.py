"""The meter interface: a sampling thread, stage marks, a step trace and its integral.

Every meter yields a trace ``(t, watts)``: ``t`` in :func:`time.monotonic` seconds, strictly
ascending, and ``watts[i]`` the mean power over the interval ``(t[i-1], t[i]]``. ``watts[0]``
also stands for the time before ``t[0]`` and ``watts[-1]`` for the time after ``t[-1]``;
:func:`integrate_steps` integrates that step function over a window. Meters register
themselves by name in :data:`METERS` (see :mod:`fedsim.edge.power` for the list).
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fedsim.errors import UserError
from fedsim.registry import Registry
from fedsim.system.profiles import DeviceProfile

#: The end of every "meter missing" message.
FALLBACK = "use --meter model"


# ------------------------------------------------------------------------------ the maths


def integrate_steps(t: np.ndarray, watts: np.ndarray, t0: float, t1: float) -> float:
    """Energy in joules of a power step function over ``[t0, t1]``.

    Parameters
    ----------
    t : numpy.ndarray
        Sample times (s), strictly ascending, at least one.
    watts : numpy.ndarray
        ``watts[i]``: mean power over ``(t[i-1], t[i]]``; ``watts[0]`` also holds before ``t[0]``
        and ``watts[-1]`` after ``t[-1]``.
    t0, t1 : float
        The window, ``t0 <= t1``.

    Returns
    -------
    float
        The integral, partial intervals at both ends included.
    """
    if t1 < t0:
        raise ValueError(f"window end {t1} is before its start {t0}")
    if len(t) == 0:
        raise ValueError("cannot integrate an empty trace")
    # Segment k spans (edges[k], edges[k+1]] with power powers[k].
    edges = np.concatenate(([-np.inf], np.asarray(t, dtype=np.float64), [np.inf]))
    powers = np.concatenate((np.asarray(watts, dtype=np.float64), [watts[-1]]))
    overlap = np.clip(np.minimum(edges[1:], t1) - np.maximum(edges[:-1], t0), 0.0, None)
    return float(np.sum(powers * overlap))


def power_at(t: np.ndarray, watts: np.ndarray, x: float) -> float:
    """Power of the step function at time ``x`` (the interval ``(t[i-1], t[i]]`` holding ``x``)."""
    if len(t) == 0:
        raise ValueError("cannot read an empty trace")
    i = min(int(np.searchsorted(t, x, side="left")), len(t) - 1)
    return float(watts[i])


def fmt_num(x: float) -> str:
    """``x`` rounded to 3 decimals, as text (coefficients in :attr:`Meter.method`)."""
    return str(round(float(x), 3))


def one_line(e: BaseException) -> str:
    """An exception as one line: its type and message."""
    return " ".join(f"{type(e).__name__}: {e}".split())


# ------------------------------------------------------------------------------ base class


class Meter:
    """A power meter: a sampling thread, stage marks, a trace and its integral.

    Subclasses set :attr:`name`, implement :attr:`method` and :meth:`_read`, and may override
    :meth:`_open` / :meth:`_close` (called by :meth:`start` / :meth:`stop`) and :meth:`build`
    (how :func:`make_meter` constructs them).

    Parameters
    ----------
    device : DeviceProfile
        The device measured (its power coefficients are used by the model meter only).
    period_s : float
        Sampling period of the thread, in seconds.
    """

    name: ClassVar[str] = ""

    def __init__(self, device: DeviceProfile, *, period_s: float = 0.1) -> None:
        if not (math.isfinite(period_s) and period_s > 0):
            raise UserError(
                f"meter {self.name!r}: period_s must be a positive number of seconds, got {period_s}"
            )
        self.device = device
        self.period_s = float(period_s)
        self._lock = threading.Lock()
        self._t: list[float] = []
        self._w: list[float] = []
        self._last_read_t: float | None = None
        self._running = False
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._cpu_done = 0.0  # sampler CPU seconds of finished threads
        self._cpu_now = 0.0  # of the running thread, updated after each sample
        self._error: BaseException | None = None

    # -------------------------------------------------------------- hooks for subclasses

    @classmethod
    def build(
        cls,
        device: DeviceProfile,
        *,
        period_s: float,
        threads: int,
        csv_path: Path | None,
    ) -> Meter:
        """Construct the meter from :func:`make_meter`'s options (most meters need only the period)."""
        return cls(device, period_s=period_s)

    @property
    def method(self) -> str:
        """One line: how this meter measures."""
        raise NotImplementedError

    def _open(self) -> None:
        """Acquire the sensor (called by :meth:`start` before the first sample)."""

    def _close(self) -> None:
        """Release the sensor (called by :meth:`stop` after the last sample)."""

    def _read(self, t: float, dt: float | None) -> float | None:
        """Mean power (W) over the ``dt`` seconds ending at ``t``; ``dt`` is None for the first
        read after :meth:`_open`. Return None to record nothing (a counter meter priming)."""
        raise NotImplementedError

    # -------------------------------------------------------------- sampling

    def _sample_locked(self, t: float) -> None:
        if self._last_read_t is not None and t <= self._last_read_t:
            return
        dt = None if self._last_read_t is None else t - self._last_read_t
        w = self._read(t, dt)
        self._last_read_t = t
        if w is not None:
            self._t.append(t)
            self._w.append(float(w))

    def _loop(self) -> None:
        cpu0 = time.thread_time()
        next_t = time.monotonic() + self.period_s
        try:
            while not self._stop_event.wait(max(0.0, next_t - time.monotonic())):
                with self._lock:
                    now = time.monotonic()
                    self._sample_locked(now)
                next_t += self.period_s
                if next_t <= now:  # fell behind: skip the missed ticks
                    next_t = now + self.period_s
                self._cpu_now = time.thread_time() - cpu0
        except Exception as e:  # surfaced by stop()
            self._error = e
        finally:
            self._cpu_now = time.thread_time() - cpu0

    def start(self) -> None:
        """Open the sensor, take the first sample and start the sampling thread."""
        if self._thread is not None:
            raise RuntimeError(f"meter {self.name!r} is already running")
        self._open()
        with self._lock:
            self._last_read_t = None
            self._running = True
            try:
                self._sample_locked(time.monotonic())
            except BaseException:
                self._running = False
                self._close()
                raise
        self._stop_event.clear()
        self._cpu_now = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"power-meter-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop and join the sampling thread, take a last sample, close the sensor; idempotent.

        An error raised by the sensor on the sampling thread is raised here.
        """
        thread = self._thread
        if thread is None:
            return
        self._stop_event.set()
        thread.join()
        self._thread = None
        self._cpu_done += self._cpu_now
        self._cpu_now = 0.0
        try:
            with self._lock:
                try:
                    if self._error is None:
                        self._sample_locked(time.monotonic())
                finally:
                    self._running = False
        finally:
            self._close()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self) -> Meter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def mark(self) -> None:
        """Take a sample now, in the caller's thread (a stage boundary); records nothing unless started."""
        with self._lock:
            if self._running:
                self._sample_locked(time.monotonic())

    def radio(self, active: bool) -> None:
        """The radio starts (True) or stops (False) transferring; only the model meter uses it."""

    # -------------------------------------------------------------- results

    def trace(self) -> tuple[np.ndarray, np.ndarray]:
        """``(t, watts)``: monotonic seconds (ascending) and the mean power of each interval."""
        with self._lock:
            return np.array(self._t, dtype=np.float64), np.array(self._w, dtype=np.float64)

    def _trace_or_raise(self) -> tuple[np.ndarray, np.ndarray]:
        t, w = self.trace()
        if len(t) == 0:
            raise RuntimeError(f"meter {self.name!r} has no samples yet; start() it first")
        return t, w

    def energy(self, t0: float, t1: float) -> float:
        """Joules over ``[t0, t1]`` (monotonic seconds); see :func:`integrate_steps`."""
        t, w = self._trace_or_raise()
        return integrate_steps(t, w, t0, t1)

    def mean_power(self, t0: float, t1: float) -> float:
        """Mean watts over ``[t0, t1]``; for ``t1 == t0`` the power at ``t0``."""
        if t1 == t0:
            t, w = self._trace_or_raise()
            return power_at(t, w, t0)
        return self.energy(t0, t1) / (t1 - t0)

    @property
    def sampler_cpu_s(self) -> float:
        """CPU seconds spent by the sampling thread itself (``time.thread_time`` inside it)."""
        return self._cpu_done + self._cpu_now

    def describe(self) -> dict[str, Any]:
        """What to store next to results: meter, method, period, number of samples, sampler CPU."""
        with self._lock:
            n = len(self._t)
        return {
            "meter": self.name,
            "method": self.method,
            "period_s": self.period_s,
            "samples": n,
            "sampler_cpu_s": self.sampler_cpu_s,
        }


METERS: Registry[type[Meter]] = Registry("power meter")


def registered(cls: type[Meter]) -> type[Meter]:
    """Class decorator: register a meter class under its :attr:`Meter.name`."""
    return METERS.register(cls.name)(cls)
