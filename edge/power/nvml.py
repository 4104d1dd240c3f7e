"""The ``nvml`` meter: an NVIDIA GPU's total energy counter."""

from __future__ import annotations

from collections.abc import Callable

from fedsim.edge.power.base import FALLBACK, Meter, one_line, registered
from fedsim.errors import UserError
from fedsim.system.profiles import DeviceProfile


@registered
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
            import pynvml
        except ImportError:
            raise UserError(
                "meter 'nvml': Python module pynvml not found (pip install nvidia-ml-py; needs an NVIDIA GPU "
                f"and driver); {FALLBACK}"
            ) from None
        try:
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except Exception as e:
            raise UserError(
                f"meter 'nvml': no NVIDIA driver or GPU {index} energy counter ({one_line(e)}; needs a "
                f"Volta or newer GPU); {FALLBACK}"
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
