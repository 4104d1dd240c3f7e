"""Building a meter by name, ``auto`` (the best one present), and the sampling overhead."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fedsim.edge.power.base import METERS, Meter

# importing the meter modules registers them in METERS
from fedsim.edge.power.csvlog import CsvMeter
from fedsim.edge.power.ina219 import Ina219Meter
from fedsim.edge.power.jtop import JtopMeter
from fedsim.edge.power.model import ModelMeter
from fedsim.edge.power.nvml import NvmlMeter
from fedsim.edge.power.rapl import RaplMeter
from fedsim.errors import UserError
from fedsim.system.profiles import DEVICES, DeviceProfile

#: The order in which ``make_meter("auto", ...)`` tries meters before falling back to ``model``.
AUTO_ORDER = ("jtop", "ina219", "rapl")
#: Every meter class, registered in METERS by importing its module.
ALL_METERS = (CsvMeter, Ina219Meter, JtopMeter, ModelMeter, NvmlMeter, RaplMeter)


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
    options: dict[str, Any] = {
        "period_s": period_s,
        "threads": threads,
        "csv_path": csv_path,
    }
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
    meter_name: str = "model",
    device: str = "this-host",
    seconds: float = 5.0,
    period_s: float = 0.1,
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
