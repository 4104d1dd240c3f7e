"""Power meters for the edge testbed: timestamped power samples (W) and energy over time windows.

One module per meter, behind the interface of :mod:`~fedsim.edge.power.base`:

- ``base``: :class:`Meter` (sampling thread, stage marks, trace, integral), :data:`METERS`;
- ``model``: the process's CPU utilisation and radio time through the device profile's
  power model (always available, the default);
- ``rapl``: RAPL ``energy_uj`` counters (the counter wraps at ``max_energy_range_uj`` and the
  wrap is added back); ``nvml``: the GPU's total energy in mJ;
- ``jtop``, ``ina219``: instantaneous readings held backwards over the interval ending there;
- ``csvlog``: the ``csv`` meter, a log recorded elsewhere (its ``start``, ``stop``, ``mark``
  and ``radio`` do nothing);
- ``auto``: :func:`make_meter` (``"auto"``: the best present, jtop, then ina219, then rapl,
  else the model) and :func:`measure_overhead`.

Counter meters give the mean power of each interval from the difference of two counter
readings. A meter samples on its own thread every ``period_s`` seconds between
:meth:`Meter.start` and :meth:`Meter.stop`; :meth:`Meter.mark` takes one more sample in the
caller's thread, so that a stage boundary is a sample boundary. A meter that the machine lacks
raises :class:`~fedsim.errors.UserError` with one line naming what is missing.
"""

from fedsim.edge.power.auto import AUTO_ORDER, make_meter, measure_overhead
from fedsim.edge.power.base import (
    FALLBACK,
    METERS,
    Meter,
    integrate_steps,
    power_at,
    registered,
)
from fedsim.edge.power.csvlog import CsvMeter, PowerLog, read_power_csv
from fedsim.edge.power.ina219 import Ina219Meter
from fedsim.edge.power.jtop import JTOP_SOCKET, JtopMeter, parse_jtop_power
from fedsim.edge.power.model import ModelMeter
from fedsim.edge.power.nvml import NvmlMeter
from fedsim.edge.power.rapl import RAPL_ROOT, RaplMeter

__all__ = [
    "AUTO_ORDER",
    "FALLBACK",
    "JTOP_SOCKET",
    "METERS",
    "RAPL_ROOT",
    "CsvMeter",
    "Ina219Meter",
    "JtopMeter",
    "Meter",
    "ModelMeter",
    "NvmlMeter",
    "PowerLog",
    "RaplMeter",
    "integrate_steps",
    "make_meter",
    "measure_overhead",
    "parse_jtop_power",
    "power_at",
    "read_power_csv",
    "registered",
]
