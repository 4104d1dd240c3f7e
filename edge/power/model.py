"""The ``model`` meter: power from the process's CPU utilisation and radio time (always available)."""

from __future__ import annotations

import time
from pathlib import Path

from fedsim.edge.power.base import Meter, fmt_num, registered
from fedsim.errors import UserError
from fedsim.system.profiles import DeviceProfile


@registered
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
    def build(
        cls,
        device: DeviceProfile,
        *,
        period_s: float,
        threads: int,
        csv_path: Path | None,
    ) -> Meter:
        """Construct with the workload's thread count."""
        return cls(device, period_s=period_s, threads=threads)

    @property
    def method(self) -> str:
        """The formula with this profile's coefficients."""
        d = self.device
        return (
            f"utilisation model ({d.name} profile): P = {fmt_num(d.idle_w)} + "
            f"{fmt_num(d.compute_w - d.idle_w)}*util + {fmt_num(d.transmit_w - d.idle_w)}*radio, "
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
