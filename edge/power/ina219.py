"""The ``ina219`` meter: an INA219 current/power sensor on I2C (pi-ina219)."""

from __future__ import annotations

from typing import Any

from fedsim.edge.power.base import FALLBACK, Meter, one_line, registered
from fedsim.errors import UserError
from fedsim.system.profiles import DeviceProfile


@registered
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
                from ina219 import INA219
            except ImportError:
                raise UserError(
                    "meter 'ina219': Python module ina219 not found (pip install pi-ina219; needs an INA219 "
                    f"on the Raspberry Pi's I2C bus); {FALLBACK}"
                ) from None
            try:
                sensor = INA219(shunt_ohms, max_amps)
                sensor.configure()
            except Exception as e:
                raise UserError(
                    f"meter 'ina219': no INA219 on the I2C bus ({one_line(e)}); {FALLBACK}"
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
