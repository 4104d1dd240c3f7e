"""The ``csv`` meter: a USB power meter's log, aligned to this process's clock by wall time."""

from __future__ import annotations

import csv
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from fedsim.edge.power.base import Meter, one_line, registered
from fedsim.errors import UserError, finite_number
from fedsim.system.profiles import DeviceProfile

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
            f"meter 'csv': cannot read {path} ({one_line(e)}); expected a CSV power log"
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

    i_time, i_w, i_mw, i_v, i_a = (
        col(_TIME),
        col(_WATTS),
        col(_MILLIWATTS),
        col(_VOLTS),
        col(_AMPS),
    )
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
            value *= finite_number(row[i].strip(), f"{path}:{offset}", f"a number in column {i + 1}") * scale
        times.append(t)
        watts.append(value)
    if len(times) < 2:
        raise UserError(f"{path}: expected at least two readings, got {len(times)}")
    return PowerLog(np.array(times), np.array(watts), columns)


@registered
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
    def build(
        cls,
        device: DeviceProfile,
        *,
        period_s: float,
        threads: int,
        csv_path: Path | None,
    ) -> Meter:
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
