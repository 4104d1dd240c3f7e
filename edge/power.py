"""Power meters for the edge testbed: timestamped power samples (W) and energy over time windows.

Every meter yields a trace ``(t, watts)``: ``t`` in :func:`time.monotonic` seconds, strictly
ascending, and ``watts[i]`` the mean power over the interval ``(t[i-1], t[i]]``:

- counter-based meters (``rapl``: RAPL ``energy_uj``; ``nvml``: the GPU's total energy in mJ)
  give exactly that, from the difference of two counter readings over the time between them;
  RAPL's counter wraps at ``max_energy_range_uj`` and the wrap is added back;
- instantaneous meters (``jtop``, ``ina219``, a ``csv`` log) hold the reading taken at ``t[i]``
  backwards over the interval ending there;
- the ``model`` meter computes the interval's power from the process's CPU utilisation over the
  interval and the fraction of it during which the radio was active (see :class:`ModelMeter`).

``watts[0]`` also stands for the time before ``t[0]`` (for counter meters it *is* the mean power
since :meth:`Meter.start` primed the counter), and ``watts[-1]`` for the time after ``t[-1]``:
outside the trace the nearest interval's power is used. :func:`integrate_steps` integrates that
step function over ``[t0, t1]``, partial intervals at both ends included; ``Meter.energy`` and
``Meter.mean_power`` use it.

A meter samples on its own thread every ``period_s`` seconds between :meth:`Meter.start` and
:meth:`Meter.stop`, each of which also reads the sensor once (for counter meters and the model,
the read at start only primes the counter, so the trace begins at the next sample).
:meth:`Meter.mark` takes one more sample synchronously in the caller's thread (a few
microseconds for the model meter), so that a stage boundary is a sample boundary and the energy
of a stage window is that of its own intervals; outside ``start()`` .. ``stop()`` it records
nothing. The CPU time of the sampling thread is measured (:attr:`Meter.sampler_cpu_s`) and
reported by :meth:`Meter.describe`. The ``csv`` meter reads a log recorded elsewhere: its
``start``, ``stop``, ``mark`` and ``radio`` do nothing.

Meters are registered by name in :data:`METERS`; :func:`make_meter` builds one (``"auto"``: the
best present, jtop, then ina219, then rapl, else the model). A meter that the machine lacks
raises :class:`~fedsim.errors.UserError` with one line naming what is missing.
"""

from __future__ import annotations

import csv
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fedsim.errors import UserError
from fedsim.registry import Registry
from fedsim.system.profiles import DEVICES, DeviceProfile

#: sysfs folder holding the RAPL power-capping zones (a module constant so that tests can point
#: ``auto`` at a fake tree).
RAPL_ROOT = Path("/sys/class/powercap")
#: Socket of the jetson-stats (jtop 4.x) service; its absence means the service is not running.
JTOP_SOCKET = Path("/run/jtop.sock")
#: The order in which ``make_meter("auto", ...)`` tries meters before falling back to ``model``.
AUTO_ORDER = ("jtop", "ina219", "rapl")

_FALLBACK = "use --meter model"


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


def _num(x: float) -> str:
    return str(round(float(x), 3))


def _one_line(e: BaseException) -> str:
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
    def build(cls, device: DeviceProfile, *, period_s: float, threads: int, csv_path: Path | None) -> Meter:
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


def _registered(cls: type[Meter]) -> type[Meter]:
    return METERS.register(cls.name)(cls)


# ------------------------------------------------------------------------------ model


@_registered
class ModelMeter(Meter):
    """Utilisation model from the device profile (always available).

    ``P = idle_w + (compute_w - idle_w) * min(1, util / threads) + (transmit_w - idle_w) * radio``
    where ``util`` is the process's CPU seconds (all its threads, ``time.process_time``) over
    the interval's wall seconds and ``radio`` the fraction of the interval during which
    :meth:`radio` was active.

    Parameters
    ----------
    device : DeviceProfile
        Gives ``idle_w``, ``compute_w`` and ``transmit_w``.
    period_s : float
        Sampling period in seconds.
    threads : int
        Threads the workload may use: ``threads`` busy cores count as full compute power.
    """

    name = "model"

    def __init__(self, device: DeviceProfile, *, period_s: float = 0.1, threads: int = 1) -> None:
        super().__init__(device, period_s=period_s)
        if threads < 1:
            raise UserError(f"meter 'model': threads must be at least 1, got {threads}")
        self.threads = int(threads)
        self._cpu_prev = 0.0
        self._radio_since: float | None = None
        self._radio_s = 0.0

    @classmethod
    def build(cls, device: DeviceProfile, *, period_s: float, threads: int, csv_path: Path | None) -> Meter:
        """Construct with the workload's thread count."""
        return cls(device, period_s=period_s, threads=threads)

    @property
    def method(self) -> str:
        """The formula with this profile's coefficients."""
        d = self.device
        return (
            f"utilisation model ({d.name} profile): P = {_num(d.idle_w)} + "
            f"{_num(d.compute_w - d.idle_w)}*util + {_num(d.transmit_w - d.idle_w)}*radio, "
            f"util = min(1, process CPU s / wall s / {self.threads})"
        )

    def radio(self, active: bool) -> None:
        """Record the radio switching on or off (its active time enters the next sample)."""
        with self._lock:
            now = time.monotonic()
            if active and self._radio_since is None:
                self._radio_since = now
            elif not active and self._radio_since is not None:
                self._radio_s += now - self._radio_since
                self._radio_since = None

    def power(self, util: float, radio_fraction: float) -> float:
        """The model's power for a CPU utilisation (cores) and a radio-active fraction."""
        d = self.device
        return (
            d.idle_w
            + (d.compute_w - d.idle_w) * min(1.0, max(0.0, util) / self.threads)
            + (d.transmit_w - d.idle_w) * min(1.0, max(0.0, radio_fraction))
        )

    def _read(self, t: float, dt: float | None) -> float | None:
        cpu = time.process_time()
        if self._radio_since is not None:
            self._radio_s += t - self._radio_since
            self._radio_since = t
        radio_s, self._radio_s = self._radio_s, 0.0
        cpu_prev, self._cpu_prev = self._cpu_prev, cpu
        if dt is None:
            return None
        return self.power((cpu - cpu_prev) / dt, radio_s / dt)


# ------------------------------------------------------------------------------ RAPL


@dataclass(frozen=True)
class _RaplDomain:
    energy_path: Path
    max_range_uj: int


def _rapl_missing(path: Path) -> UserError:
    return UserError(
        f"meter 'rapl': {path} not found or not readable (needs an Intel/AMD Linux host, usually root); "
        f"{_FALLBACK}"
    )


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


@_registered
class RaplMeter(Meter):
    """Intel/AMD RAPL package energy counters in sysfs (``intel-rapl:N/energy_uj``).

    Sums the top-level package zones ``intel-rapl:N`` (not their sub-zones ``intel-rapl:N:M``,
    which the packages include, nor a ``psys`` zone, which includes the packages).

    Parameters
    ----------
    device : DeviceProfile
        The device measured (recorded only).
    period_s : float
        Sampling period in seconds.
    root : Path, optional
        The powercap folder; :data:`RAPL_ROOT` by default (tests pass a fake tree).
    """

    name = "rapl"

    def __init__(self, device: DeviceProfile, *, period_s: float = 0.1, root: Path | None = None) -> None:
        super().__init__(device, period_s=period_s)
        self.root = Path(root) if root is not None else RAPL_ROOT
        zones = [p for p in self.root.glob("intel-rapl:*") if re.fullmatch(r"intel-rapl:\d+", p.name)]
        zones.sort(key=lambda p: int(p.name.split(":")[1]))
        domains = []
        for zone in zones:
            name_file = zone / "name"
            if name_file.is_file() and name_file.read_text().strip() == "psys":
                continue
            try:
                _read_int(zone / "energy_uj")
                max_range = _read_int(zone / "max_energy_range_uj")
            except (OSError, ValueError):
                raise _rapl_missing(zone / "energy_uj") from None
            domains.append(_RaplDomain(zone / "energy_uj", max_range))
        if not domains:
            raise _rapl_missing(self.root / "intel-rapl:0" / "energy_uj")
        self._domains = domains
        self._prev: list[int] = []

    @property
    def method(self) -> str:
        """Which zones and how."""
        names = ", ".join(d.energy_path.parent.name for d in self._domains)
        return (
            f"RAPL package energy counters ({names} under {self.root}): mean power from energy_uj "
            "differences, wrap at max_energy_range_uj added back"
        )

    def _read(self, t: float, dt: float | None) -> float | None:
        energies = [_read_int(d.energy_path) for d in self._domains]
        prev, self._prev = self._prev, energies
        if dt is None:
            return None
        delta_uj = 0
        for d, e, p in zip(self._domains, energies, prev, strict=True):
            delta_uj += e - p if e >= p else e - p + d.max_range_uj
        return delta_uj * 1e-6 / dt


# ------------------------------------------------------------------------------ jtop


def parse_jtop_power(power: Mapping[str, Any]) -> float:
    """Total board power in W from jtop's ``power`` dict (jetson-stats 4.x).

    Parameters
    ----------
    power : Mapping
        ``{"rail": {NAME: {...}}, "tot": {"power": mW, "avg": mW, ...}}``; the instantaneous
        ``tot.power`` is used, never ``avg`` (a running half-average of past readings).

    Returns
    -------
    float
        Watts.
    """
    try:
        mw = power["tot"]["power"]
        return float(mw) / 1000.0
    except (KeyError, TypeError, ValueError):
        raise UserError(
            "meter 'jtop': jtop reports no total power (power['tot']['power'] missing); expected "
            "jetson-stats 4.x on a Jetson with INA3221 power rails"
        ) from None


@_registered
class JtopMeter(Meter):
    """Jetson board power from the jtop service (jetson-stats), instantaneous mW held over each interval.

    Parameters
    ----------
    device : DeviceProfile
        The device measured (recorded only).
    period_s : float
        Sampling period in seconds; also jtop's ``interval`` (one rate shared by the service).
    source : callable, optional
        Returns jtop's ``power`` dict; by default a ``jtop.jtop`` connection opened by
        :meth:`start`. Tests pass recorded samples.
    """

    name = "jtop"

    def __init__(
        self,
        device: DeviceProfile,
        *,
        period_s: float = 0.1,
        source: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(device, period_s=period_s)
        self._source = source
        self._jtop_module: Any = None
        self._jetson: Any = None
        if source is None:
            try:
                import jtop  # type: ignore[import-not-found]
            except ImportError:
                raise UserError(
                    "meter 'jtop': Python module jtop not found (pip install 'fedsim[jetson]', which "
                    f"installs jetson-stats; needs a Jetson); {_FALLBACK}"
                ) from None
            if not JTOP_SOCKET.exists():
                raise UserError(
                    f"meter 'jtop': the jtop service is not running ({JTOP_SOCKET} missing; "
                    f"sudo systemctl start jtop.service); {_FALLBACK}"
                )
            self._jtop_module = jtop

    @property
    def method(self) -> str:
        """Source and how readings become intervals."""
        return (
            f"jtop (jetson-stats) total board power power['tot']['power'] in mW at interval "
            f"{self.period_s} s, instantaneous readings held over each interval"
        )

    def _open(self) -> None:
        if self._jtop_module is None:
            return
        try:
            jetson = self._jtop_module.jtop(interval=self.period_s)
            jetson.start()
        except Exception as e:
            raise UserError(
                f"meter 'jtop': cannot connect to the jtop service ({_one_line(e)}); {_FALLBACK}"
            ) from None
        self._jetson = jetson
        self._source = lambda: jetson.power

    def _close(self) -> None:
        if self._jetson is not None:
            self._jetson.close()
            self._jetson = None
            self._source = None

    def _read(self, t: float, dt: float | None) -> float | None:
        assert self._source is not None
        return parse_jtop_power(self._source())


# ------------------------------------------------------------------------------ INA219


@_registered
class Ina219Meter(Meter):
    """INA219 current/power sensor on I2C (pi-ina219), instantaneous mW held over each interval.

    Parameters
    ----------
    device : DeviceProfile
        The device measured (recorded only).
    period_s : float
        Sampling period in seconds.
    sensor : object, optional
        Anything with ``.power()`` in mW; by default ``ina219.INA219(shunt_ohms, max_amps)``,
        configured. Tests pass recorded readings.
    shunt_ohms, max_amps : float
        Shunt resistance and the largest expected current (the usual breakout: 0.1 ohm, 3.2 A).
    """

    name = "ina219"

    def __init__(
        self,
        device: DeviceProfile,
        *,
        period_s: float = 0.1,
        sensor: Any = None,
        shunt_ohms: float = 0.1,
        max_amps: float = 3.2,
    ) -> None:
        super().__init__(device, period_s=period_s)
        self.shunt_ohms, self.max_amps = shunt_ohms, max_amps
        if sensor is None:
            try:
                from ina219 import INA219  # type: ignore[import-not-found]
            except ImportError:
                raise UserError(
                    "meter 'ina219': Python module ina219 not found (pip install pi-ina219; needs an INA219 "
                    f"on the Raspberry Pi's I2C bus); {_FALLBACK}"
                ) from None
            try:
                sensor = INA219(shunt_ohms, max_amps)
                sensor.configure()
            except Exception as e:
                raise UserError(
                    f"meter 'ina219': no INA219 on the I2C bus ({_one_line(e)}); {_FALLBACK}"
                ) from None
        self._sensor = sensor

    @property
    def method(self) -> str:
        """Sensor settings and how readings become intervals."""
        return (
            f"INA219 on I2C (shunt {self.shunt_ohms} ohm, {self.max_amps} A max): power() in mW, "
            "instantaneous readings held over each interval"
        )

    def _read(self, t: float, dt: float | None) -> float | None:
        return float(self._sensor.power()) / 1000.0


# ------------------------------------------------------------------------------ NVML


@_registered
class NvmlMeter(Meter):
    """NVIDIA GPU total energy counter (NVML, Volta and newer), mean power from counter differences.

    Parameters
    ----------
    device : DeviceProfile
        The device measured (recorded only).
    period_s : float
        Sampling period in seconds (measure windows of many requests: the counter is coarse).
    reader : callable, optional
        Returns the energy counter in mJ; by default ``nvmlDeviceGetTotalEnergyConsumption`` of
        GPU ``index``. Tests pass recorded counter values.
    index : int
        The GPU.
    """

    name = "nvml"

    def __init__(
        self,
        device: DeviceProfile,
        *,
        period_s: float = 0.1,
        reader: Callable[[], float] | None = None,
        index: int = 0,
    ) -> None:
        super().__init__(device, period_s=period_s)
        self.index = index
        if reader is None:
            reader = self._nvml_reader(index)
        self._reader = reader
        self._prev = 0.0

    @staticmethod
    def _nvml_reader(index: int) -> Callable[[], float]:
        try:
            import pynvml  # type: ignore[import-not-found]
        except ImportError:
            raise UserError(
                "meter 'nvml': Python module pynvml not found (pip install nvidia-ml-py; needs an NVIDIA GPU "
                f"and driver); {_FALLBACK}"
            ) from None
        try:
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except Exception as e:
            raise UserError(
                f"meter 'nvml': no NVIDIA driver or GPU {index} energy counter ({_one_line(e)}; needs a "
                f"Volta or newer GPU); {_FALLBACK}"
            ) from None
        return lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)

    @property
    def method(self) -> str:
        """Counter and how it becomes intervals."""
        return (
            f"NVML total energy counter of GPU {self.index} (nvmlDeviceGetTotalEnergyConsumption, mJ): "
            "mean power from counter differences"
        )

    def _read(self, t: float, dt: float | None) -> float | None:
        energy = float(self._reader())
        prev, self._prev = self._prev, energy
        if dt is None:
            return None
        # A counter that went down was reset (driver reload): count from zero.
        delta = energy - prev if energy >= prev else energy
        return delta * 1e-3 / dt


# ------------------------------------------------------------------------------ CSV


_TIME = {"timestamp", "time", "unixtime", "datetime"}
_WATTS = {"watts", "w", "power", "powerw"}
_MILLIWATTS = {"mw", "milliwatts", "powermw"}
_VOLTS = {"volts", "v", "voltage", "voltagev"}
_AMPS = {"amps", "a", "current", "currenta"}


@dataclass(frozen=True)
class PowerLog:
    """A USB power meter's log: unix times (s, ascending) and watts, and the columns used."""

    unix_s: np.ndarray
    watts: np.ndarray
    columns: str


def _column_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    return datetime.fromisoformat(text).timestamp()  # naive times are local time


def read_power_csv(path: Path) -> PowerLog:
    """Read a power log: a header, then one reading per row.

    Columns (case and units in brackets ignored): a timestamp (``timestamp`` or ``time``: unix
    seconds or ISO 8601; naive ISO times are local time) and either ``watts``, or ``mW``, or
    ``volts`` and ``amps`` (W = V * A). Delimiter ``,``, ``;`` or tab. Timestamps must increase.

    Parameters
    ----------
    path : Path
        The CSV file.

    Returns
    -------
    PowerLog
        Times and watts.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(
            f"meter 'csv': cannot read {path} ({_one_line(e)}); expected a CSV power log"
        ) from None
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise UserError(f"{path}: empty file; expected a header (timestamp, watts) and readings")
    delimiter = next((d for d in (",", ";", "\t") if d in lines[first]), ",")
    rows = csv.reader(lines[first:], delimiter=delimiter)
    header = [_column_key(h) for h in next(rows)]

    def col(names: set[str]) -> int | None:
        return next((i for i, h in enumerate(header) if h in names), None)

    i_time, i_w, i_mw, i_v, i_a = col(_TIME), col(_WATTS), col(_MILLIWATTS), col(_VOLTS), col(_AMPS)
    if i_time is None or (i_w is None and i_mw is None and (i_v is None or i_a is None)):
        raise UserError(
            f"{path}:{first + 1}: expected a header with a timestamp column and watts, mW, or volts and amps "
            f"columns; got {lines[first].strip()!r}"
        )
    if i_w is not None:
        columns, scaled = "timestamp, watts", [(i_w, 1.0)]
    elif i_mw is not None:
        columns, scaled = "timestamp, mW", [(i_mw, 1e-3)]
    else:
        assert i_v is not None and i_a is not None
        columns, scaled = "timestamp, volts * amps", [(i_v, 1.0), (i_a, 1.0)]
    width = len(header)
    times: list[float] = []
    watts: list[float] = []
    for offset, row in enumerate(rows, start=first + 2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != width:
            raise UserError(f"{path}:{offset}: expected {width} fields like the header, got {len(row)}")
        cell = row[i_time].strip()
        try:
            t = _parse_time(cell)
        except ValueError:
            raise UserError(
                f"{path}:{offset}: expected a timestamp (unix seconds or ISO 8601), got {cell!r}"
            ) from None
        if times and t <= times[-1]:
            raise UserError(
                f"{path}:{offset}: expected timestamps to increase, got {cell!r} after an equal or later one"
            )
        value = 1.0
        for i, scale in scaled:
            cell = row[i].strip()
            try:
                x = float(cell)
            except ValueError:
                x = math.nan
            if not math.isfinite(x):
                raise UserError(f"{path}:{offset}: expected a number in column {i + 1}, got {cell!r}")
            value *= x * scale
        times.append(t)
        watts.append(value)
    if len(times) < 2:
        raise UserError(f"{path}: expected at least two readings, got {len(times)}")
    return PowerLog(np.array(times), np.array(watts), columns)


@_registered
class CsvMeter(Meter):
    """A USB power meter's log (CSV), aligned to this process's clock by wall time.

    The trace is the log's readings, each held backwards over the interval ending at it, with
    unix time mapped to monotonic time by ``offset = time.time() - time.monotonic()`` taken at
    construction. :meth:`start`, :meth:`stop`, :meth:`mark` and :meth:`radio` do nothing; the
    period is the log's median sample interval.

    Parameters
    ----------
    device : DeviceProfile
        The device measured (recorded only).
    csv_path : Path
        The log; see :func:`read_power_csv`.
    offset : float, optional
        Wall minus monotonic seconds; measured now by default.
    """

    name = "csv"

    def __init__(self, device: DeviceProfile, *, csv_path: Path, offset: float | None = None) -> None:
        log = read_power_csv(csv_path)
        super().__init__(device, period_s=float(np.median(np.diff(log.unix_s))))
        self.path = Path(csv_path)
        self.offset = time.time() - time.monotonic() if offset is None else float(offset)
        self._columns = log.columns
        self._t = list(log.unix_s - self.offset)
        self._w = list(log.watts)

    @classmethod
    def build(cls, device: DeviceProfile, *, period_s: float, threads: int, csv_path: Path | None) -> Meter:
        """Construct from the log file (required)."""
        if csv_path is None:
            raise UserError("meter 'csv': no log file given; expected a CSV with timestamp and watts columns")
        return cls(device, csv_path=csv_path)

    @property
    def method(self) -> str:
        """The file and its columns."""
        return (
            f"USB power meter log {self.path.name} ({self._columns}; {len(self._t)} readings): readings held "
            "over each interval, aligned by wall time"
        )

    def start(self) -> None:
        """Nothing to start: the log was recorded elsewhere."""

    def stop(self) -> None:
        """Nothing to stop."""


# ------------------------------------------------------------------------------ factory


def make_meter(
    name: str,
    device: DeviceProfile,
    *,
    period_s: float = 0.1,
    threads: int = 1,
    csv_path: Path | None = None,
) -> Meter:
    """Build the meter registered as ``name``, or with ``"auto"`` the best one present.

    Parameters
    ----------
    name : str
        ``"auto"`` (jtop, then ina219, then rapl, else model) or a name in :data:`METERS`.
    device : DeviceProfile
        The device measured.
    period_s : float
        Sampling period in seconds.
    threads : int
        Threads of the workload (the model meter's full-load point).
    csv_path : Path, optional
        The log of the ``csv`` meter.

    Returns
    -------
    Meter
        Not started.
    """
    options: dict[str, Any] = {"period_s": period_s, "threads": threads, "csv_path": csv_path}
    if name == "auto":
        for candidate in AUTO_ORDER:
            try:
                return METERS.get(candidate).build(device, **options)
            except UserError:
                continue
        name = "model"
    if name not in METERS:
        raise UserError(f"unknown power meter {name!r}; expected one of: auto, {', '.join(METERS.names())}")
    return METERS.get(name).build(device, **options)


def measure_overhead(
    meter_name: str = "model", device: str = "this-host", seconds: float = 5.0, period_s: float = 0.1
) -> dict[str, Any]:
    """CPU cost of a meter's sampling thread: run it idle for ``seconds`` and time its thread.

    Parameters
    ----------
    meter_name : str
        As for :func:`make_meter`.
    device : str
        A device profile name (:data:`~fedsim.system.profiles.DEVICES`).
    seconds : float
        How long to sample.
    period_s : float
        Sampling period.

    Returns
    -------
    dict
        ``meter``, ``period_s``, ``seconds`` (measured wall time), ``sampler_cpu_s`` and
        ``overhead_fraction_of_core`` (sampler CPU seconds per wall second).
    """
    meter = make_meter(meter_name, DEVICES.get(device), period_s=period_s)
    t0 = time.monotonic()
    with meter:
        time.sleep(seconds)
    wall = time.monotonic() - t0
    cpu = meter.sampler_cpu_s
    return {
        "meter": meter.name,
        "period_s": period_s,
        "seconds": wall,
        "sampler_cpu_s": cpu,
        "overhead_fraction_of_core": cpu / wall,
    }
