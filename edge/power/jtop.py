"""The ``jtop`` meter: Jetson board power from the jetson-stats service."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedsim.edge.power.base import FALLBACK, Meter, one_line, registered
from fedsim.errors import UserError
from fedsim.system.profiles import DeviceProfile

#: Socket of the jetson-stats (jtop 4.x) service; its absence means the service is not running.
JTOP_SOCKET = Path("/run/jtop.sock")


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


@registered
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
                import jtop
            except ImportError:
                raise UserError(
                    "meter 'jtop': Python module jtop not found (pip install 'fedsim[jetson]', which "
                    f"installs jetson-stats; needs a Jetson); {FALLBACK}"
                ) from None
            if not JTOP_SOCKET.exists():
                raise UserError(
                    f"meter 'jtop': the jtop service is not running ({JTOP_SOCKET} missing; "
                    f"sudo systemctl start jtop.service); {FALLBACK}"
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
                f"meter 'jtop': cannot connect to the jtop service ({one_line(e)}); {FALLBACK}"
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
