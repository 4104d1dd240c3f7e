"""The ``rapl`` meter: Intel/AMD RAPL package energy counters in sysfs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fedsim.edge.power.base import FALLBACK, Meter, registered
from fedsim.errors import UserError
from fedsim.system.profiles import DeviceProfile

#: sysfs folder holding the RAPL power-capping zones (a module constant so that tests can point
#: ``auto`` at a fake tree).
RAPL_ROOT = Path("/sys/class/powercap")


@dataclass(frozen=True)
class _RaplDomain:
    energy_path: Path
    max_range_uj: int


def _rapl_missing(path: Path) -> UserError:
    return UserError(
        f"meter 'rapl': {path} not found or not readable (needs an Intel/AMD Linux host, usually root); "
        f"{FALLBACK}"
    )


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


@registered
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
