"""Power meters: step-trace integration, the utilisation model on a real run, and every sensor
through its real parsing code (fake sysfs tree, recorded jtop / INA219 / NVML / CSV samples)."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from fedsim.edge.power import (
    METERS,
    CsvMeter,
    Ina219Meter,
    JtopMeter,
    ModelMeter,
    NvmlMeter,
    RaplMeter,
    integrate_steps,
    make_meter,
    measure_overhead,
    parse_jtop_power,
    rapl,
    read_power_csv,
)
from fedsim.errors import UserError
from fedsim.system.profiles import DEVICES, DeviceProfile

DATA = Path(__file__).parent / "data" / "power"
HOST = DEVICES.get("this-host")
# Wide gaps between the three states, so that the model's terms are easy to tell apart.
TOY = DeviceProfile("toy", None, idle_w=2.0, compute_w=10.0, transmit_w=6.0, memory_gb=1.0, source="test")
NEVER = 3600.0  # a period so long that only start, mark and stop take samples


def _numbers(path: Path) -> list[float]:
    lines = path.read_text().splitlines()
    return [float(x) for x in lines if x.strip() and not x.startswith("#")]


def _busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


# ------------------------------------------------------------------------------ integration


def test_integrate_steps_hand_computed():
    # (-inf, 1] 10 W, (1, 2] 20 W, (2, 4] 5 W, (4, inf) 5 W.
    t, w = np.array([1.0, 2.0, 4.0]), np.array([10.0, 20.0, 5.0])
    assert integrate_steps(t, w, 1.0, 4.0) == pytest.approx(20.0 + 10.0)
    assert integrate_steps(t, w, 1.5, 3.0) == pytest.approx(20.0 * 0.5 + 5.0 * 1.0)
    assert integrate_steps(t, w, 0.0, 1.0) == pytest.approx(10.0)  # before the first sample
    assert integrate_steps(t, w, 4.0, 6.0) == pytest.approx(10.0)  # after the last
    assert integrate_steps(t, w, 0.5, 5.0) == pytest.approx(5.0 + 20.0 + 10.0 + 5.0)
    assert integrate_steps(t, w, 3.0, 3.0) == 0.0
    with pytest.raises(ValueError, match="before its start"):
        integrate_steps(t, w, 2.0, 1.0)


def test_meter_energy_and_mean_power_on_a_log(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("timestamp,watts\n100.0,3.0\n101.0,8.0\n103.0,4.0\n")
    meter = CsvMeter(TOY, csv_path=log, offset=100.0)
    t, w = meter.trace()
    np.testing.assert_allclose(t, [0.0, 1.0, 3.0])
    np.testing.assert_allclose(w, [3.0, 8.0, 4.0])
    assert meter.energy(0.5, 2.0) == pytest.approx(8.0 * 0.5 + 4.0 * 1.0)
    assert meter.energy(-1.0, 0.5) == pytest.approx(3.0 * 1.0 + 8.0 * 0.5)
    assert meter.energy(2.5, 5.0) == pytest.approx(4.0 * 2.5)
    assert meter.mean_power(0.5, 2.0) == pytest.approx((8.0 * 0.5 + 4.0 * 1.0) / 1.5)
    assert meter.mean_power(1.0, 1.0) == 8.0  # t == 1 closes the interval (0, 1]
    assert meter.mean_power(2.0, 2.0) == 4.0
    assert meter.mean_power(-5.0, -5.0) == 3.0


def test_energy_before_any_sample_is_an_error():
    meter = ModelMeter(HOST)
    with pytest.raises(RuntimeError, match="no samples"):
        meter.energy(0.0, 1.0)
    meter.mark()  # not started: records nothing
    assert len(meter.trace()[0]) == 0


# ------------------------------------------------------------------------------ model


def test_model_busy_sleep_and_radio_windows():
    meter = ModelMeter(TOY, period_s=0.05)
    span = TOY.compute_w - TOY.idle_w
    with meter:
        t0 = time.monotonic()
        meter.mark()
        c0 = time.thread_time()
        _busy(0.4)
        busy_share = (time.thread_time() - c0) / (time.monotonic() - t0)
        meter.mark()
        t1 = time.monotonic()
        time.sleep(0.3)
        meter.mark()
        t2 = time.monotonic()
        meter.radio(True)
        time.sleep(0.3)
        meter.radio(False)
        meter.mark()
        t3 = time.monotonic()
        meter.radio(True)
        time.sleep(0.15)
        meter.radio(False)
        time.sleep(0.15)
        meter.mark()
        t4 = time.monotonic()
    busy, idle, radio, half = (meter.mean_power(a, b) for a, b in [(t0, t1), (t1, t2), (t2, t3), (t3, t4)])
    # The busy window's power follows this thread's own CPU share (measured independently), and is
    # near compute_w whenever the machine gave us most of a core.
    assert busy == pytest.approx(TOY.idle_w + span * busy_share, abs=0.15 * span)
    if busy_share > 0.8:
        assert busy > TOY.idle_w + 0.6 * span
    assert TOY.idle_w <= idle < TOY.idle_w + 0.1 * span
    radio_term = TOY.transmit_w - TOY.idle_w
    assert radio - idle == pytest.approx(radio_term, abs=0.1 * span)
    assert half - idle == pytest.approx(radio_term / 2, abs=0.1 * span)
    t, w = meter.trace()
    assert np.all(np.diff(t) > 0)
    assert TOY.idle_w <= w.min() and w.max() <= TOY.compute_w + radio_term
    # The trace integrates to the same total as the windows.
    total = sum(meter.energy(a, b) for a, b in [(t0, t1), (t1, t2), (t2, t3), (t3, t4)])
    assert meter.energy(t0, t4) == pytest.approx(total)


def test_model_method_names_its_coefficients():
    meter = ModelMeter(DEVICES.get("jetson-nano"), threads=4)
    assert "jetson-nano" in meter.method
    assert "P = 2.0 + 8.0*util + 1.0*radio" in meter.method
    assert "/ 4)" in meter.method
    assert meter.power(util=8.0, radio_fraction=0.0) == pytest.approx(10.0)  # capped at full load
    assert meter.power(util=2.0, radio_fraction=0.5) == pytest.approx(2.0 + 8.0 * 0.5 + 1.0 * 0.5)
    with pytest.raises(UserError, match="threads must be at least 1"):
        ModelMeter(HOST, threads=0)


def test_sampler_cpu_is_measured_and_overhead_is_small():
    result = measure_overhead("model", device="this-host", seconds=2.0, period_s=0.1)
    assert result["meter"] == "model"
    assert result["seconds"] >= 2.0
    assert result["sampler_cpu_s"] > 0.0
    assert result["overhead_fraction_of_core"] == pytest.approx(result["sampler_cpu_s"] / result["seconds"])
    assert result["overhead_fraction_of_core"] < 0.02


def test_sampling_thread_samples_at_its_period_and_stop_is_idempotent():
    meter = make_meter("model", HOST, period_s=0.02)
    with meter:
        time.sleep(0.3)
    meter.stop()
    info = meter.describe()
    # start + about 15 thread ticks + stop; the first read only primes the CPU counter.
    assert 8 <= info["samples"] <= 17
    assert set(info) == {"meter", "method", "period_s", "samples", "sampler_cpu_s"}
    assert info["period_s"] == 0.02 and info["sampler_cpu_s"] > 0.0


# ------------------------------------------------------------------------------ RAPL


def _rapl_zone(root: Path, name: str, energy_uj: int, max_uj: int, label: str = "package-0") -> Path:
    zone = root / name
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


def test_rapl_sums_packages_and_handles_counter_wrap(tmp_path):
    max_uj = 262_143_328_850
    pkg0 = _rapl_zone(tmp_path, "intel-rapl:0", max_uj - 500_000, max_uj)
    pkg1 = _rapl_zone(tmp_path, "intel-rapl:1", 10_000_000, max_uj, "package-1")
    core = _rapl_zone(tmp_path, "intel-rapl:0:0", 5_000_000, max_uj, "core")  # sub-zone: ignored
    _rapl_zone(tmp_path, "intel-rapl:2", 1_000, max_uj, "psys")  # includes the packages: ignored
    meter = RaplMeter(TOY, period_s=NEVER, root=tmp_path)
    assert "intel-rapl:0, intel-rapl:1 under" in meter.method
    before = time.monotonic()
    with meter:
        after = time.monotonic()
        time.sleep(0.01)
        (pkg0 / "energy_uj").write_text(f"{max_uj - 100_000}\n")  # +0.4 J
        (pkg1 / "energy_uj").write_text("11000000\n")  # +1.0 J
        (core / "energy_uj").write_text("99000000\n")
        meter.mark()
        (pkg0 / "energy_uj").write_text("1400000\n")  # wraps: +0.1 J + 1.4 J
        (pkg1 / "energy_uj").write_text("11500000\n")  # +0.5 J
        meter.mark()
    t, w = meter.trace()
    assert len(t) == 3  # two marks and stop (start only primed the counters)
    assert meter.energy(t[0], t[1]) == pytest.approx(2.0)
    assert w[1] == pytest.approx(2.0 / (t[1] - t[0]))
    assert w[2] == 0.0  # nothing changed before stop
    assert meter.energy(t[0], t[2]) == pytest.approx(2.0)
    # watts[0] is the mean power since start primed the counters: 1.4 J over (start, t[0]].
    assert before <= t[0] - 1.4 / w[0] <= after


def test_rapl_missing_or_unreadable(tmp_path):
    with pytest.raises(UserError) as e:
        RaplMeter(TOY, root=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"{tmp_path}/intel-rapl:0/energy_uj not found or not readable" in msg
    assert "use --meter model" in msg
    zone = _rapl_zone(tmp_path, "intel-rapl:0", 1, 100)
    (zone / "energy_uj").write_text("not a number\n")
    with pytest.raises(UserError, match="intel-rapl:0/energy_uj not found or not readable"):
        RaplMeter(TOY, root=tmp_path)


# ------------------------------------------------------------------------------ jtop


def test_jtop_parsing_uses_instantaneous_total_power():
    samples = json.loads((DATA / "jtop_power.json").read_text())["samples"]
    first = samples[0]
    assert parse_jtop_power(first) == pytest.approx(first["tot"]["power"] / 1000.0)
    assert parse_jtop_power(first) != pytest.approx(first["tot"]["avg"] / 1000.0)
    with pytest.raises(UserError, match=r"power\['tot'\]\['power'\] missing"):
        parse_jtop_power({"rail": first["rail"]})
    with pytest.raises(UserError, match="jtop reports no total power"):
        parse_jtop_power({})


def test_jtop_meter_holds_readings_backwards():
    samples = json.loads((DATA / "jtop_power.json").read_text())["samples"]
    feed = iter(samples)
    meter = JtopMeter(TOY, period_s=NEVER, source=lambda: next(feed))
    with meter:
        time.sleep(0.05)
        meter.mark()
        time.sleep(0.05)
    t, w = meter.trace()
    expected = [s["tot"]["power"] / 1000.0 for s in samples]
    np.testing.assert_allclose(w, expected)
    hand = expected[1] * (t[1] - t[0]) + expected[2] * (t[2] - t[1])
    assert meter.energy(t[0], t[2]) == pytest.approx(hand)
    mid = (t[1] + t[2]) / 2
    assert meter.energy(mid, t[2] + 1.0) == pytest.approx(expected[2] * (t[2] - mid + 1.0))


def test_sensor_error_on_the_sampling_thread_is_raised_by_stop():
    sample = json.loads((DATA / "jtop_power.json").read_text())["samples"][0]
    feed = iter([sample])
    meter = JtopMeter(TOY, period_s=0.01, source=lambda: next(feed, {}))
    meter.start()
    time.sleep(0.1)
    with pytest.raises(UserError, match="jtop reports no total power"):
        meter.stop()
    meter.stop()  # already stopped: nothing to raise
    assert len(meter.trace()[0]) == 1


# ------------------------------------------------------------------------------ INA219 and NVML


class RecordedIna219:
    """Replays recorded pi-ina219 ``power()`` readings (mW)."""

    def __init__(self, readings: list[float]) -> None:
        self.readings = list(readings)
        self.calls = 0

    def power(self) -> float:
        value = self.readings[self.calls]
        self.calls += 1
        return value


def test_ina219_through_an_injected_sensor():
    mw = _numbers(DATA / "ina219_power_mw.txt")
    sensor = RecordedIna219(mw)
    meter = Ina219Meter(TOY, period_s=NEVER, sensor=sensor)
    with meter:
        for _ in range(len(mw) - 2):
            time.sleep(0.01)
            meter.mark()
        time.sleep(0.01)
    assert sensor.calls == len(mw)
    t, w = meter.trace()
    np.testing.assert_allclose(w, np.array(mw) / 1000.0)
    hand = sum(mw[i] / 1000.0 * (t[i] - t[i - 1]) for i in range(1, len(t)))
    assert meter.energy(t[0], t[-1]) == pytest.approx(hand)
    assert "INA219" in meter.method and "0.1 ohm" in meter.method


def test_nvml_through_an_injected_counter():
    mj = _numbers(DATA / "nvml_energy_mj.txt")
    feed = iter(mj)
    meter = NvmlMeter(TOY, period_s=NEVER, reader=lambda: next(feed))
    before = time.monotonic()
    with meter:
        after = time.monotonic()
        for _ in range(len(mj) - 2):
            time.sleep(0.01)
            meter.mark()
        time.sleep(0.01)
    t, w = meter.trace()
    assert len(t) == len(mj) - 1  # the first reading primes the counter
    for i in range(1, len(t)):
        assert meter.energy(t[i - 1], t[i]) == pytest.approx((mj[i + 1] - mj[i]) / 1000.0)
    assert meter.energy(t[0], t[-1]) == pytest.approx((mj[-1] - mj[1]) / 1000.0)
    assert before <= t[0] - (mj[1] - mj[0]) / 1000.0 / w[0] <= after


# ------------------------------------------------------------------------------ CSV


def test_csv_unix_watts():
    log = read_power_csv(DATA / "usb_meter_watts.csv")
    assert log.columns == "timestamp, watts"
    np.testing.assert_allclose(log.watts, [2.71, 2.69, 6.12, 6.30, 5.95, 2.74])
    meter = make_meter("csv", TOY, csv_path=DATA / "usb_meter_watts.csv")
    t, w = meter.trace()
    np.testing.assert_allclose(t + meter.offset, log.unix_s)
    np.testing.assert_allclose(w, log.watts)
    assert meter.period_s == pytest.approx(0.5)
    # Readings held backwards: (1.0, 2.0] after the first is 6.30 W then 5.95 W, half a second each.
    start = log.unix_s[0] - meter.offset
    assert meter.energy(start + 1.0, start + 2.0) == pytest.approx(0.5 * 6.30 + 0.5 * 5.95, rel=1e-6)
    assert meter.energy(start + 1.25, start + 1.75) == pytest.approx(0.25 * 6.30 + 0.25 * 5.95, rel=1e-5)
    assert meter.sampler_cpu_s == 0.0
    meter.start()
    meter.mark()
    meter.radio(True)
    meter.stop()
    assert len(meter.trace()[0]) == 6


def test_csv_iso_volts_amps_aligned_by_wall_time():
    path = DATA / "usb_meter_volts_amps_iso.csv"
    log = read_power_csv(path)
    assert log.columns == "timestamp, volts * amps"
    np.testing.assert_allclose(log.watts, [5.12 * 0.52, 5.11 * 0.54, 5.08 * 1.18, 5.07 * 1.21, 5.12 * 0.53])
    assert log.unix_s[0] == datetime.fromisoformat("2025-11-26T23:00:00+00:00").timestamp()
    np.testing.assert_allclose(np.diff(log.unix_s), 0.25)
    before = time.time() - time.monotonic()
    meter = CsvMeter(TOY, csv_path=path)
    after = time.time() - time.monotonic()
    assert before - 0.01 <= meter.offset <= after + 0.01
    t, _ = meter.trace()
    np.testing.assert_allclose(t, log.unix_s - meter.offset)
    assert "usb_meter_volts_amps_iso.csv" in meter.method


def test_csv_milliwatts(tmp_path):
    path = tmp_path / "mw.csv"
    path.write_text("Time,Power (mW)\n10,2500\n11,5000\n")
    log = read_power_csv(path)
    np.testing.assert_allclose(log.watts, [2.5, 5.0])
    assert log.columns == "timestamp, mW"


@pytest.mark.parametrize(
    ("content", "where", "expected"),
    [
        ("timestamp,watts\n1.0,2.0\n2.0,abc\n", ":3:", "expected a number in column 2, got 'abc'"),
        (
            "timestamp,watts\n1.0,2.0\nyesterday,3.0\n",
            ":3:",
            "expected a timestamp (unix seconds or ISO 8601)",
        ),
        ("timestamp,watts\n2.0,2.0\n1.0,3.0\n", ":3:", "expected timestamps to increase"),
        ("timestamp,watts\n1.0,2.0\n2.0\n", ":3:", "expected 2 fields like the header, got 1"),
        ("when,volts\n1.0,2.0\n", ":1:", "expected a header with a timestamp column and watts, mW"),
        ("timestamp,watts\n1.0,2.0\n", ":", "expected at least two readings, got 1"),
        ("", ":", "empty file"),
    ],
)
def test_bad_csv_names_file_line_and_expectation(tmp_path, content, where, expected):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(UserError) as e:
        make_meter("csv", TOY, csv_path=path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}{where}")
    assert expected in msg


def test_csv_needs_a_file(tmp_path):
    with pytest.raises(UserError, match="meter 'csv': no log file given"):
        make_meter("csv", TOY)
    with pytest.raises(UserError, match=r"meter 'csv': cannot read .*missing\.csv"):
        make_meter("csv", TOY, csv_path=tmp_path / "missing.csv")


# ------------------------------------------------------------------------------ factory


@pytest.fixture
def no_sensors(monkeypatch, tmp_path):
    """This machine as it is here: no jtop, no ina219, no pynvml module, no RAPL tree."""
    for module in ("jtop", "ina219", "pynvml"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    monkeypatch.setattr(rapl, "RAPL_ROOT", tmp_path / "powercap")  # where RaplMeter reads it
    return tmp_path / "powercap"


def test_auto_picks_model_here(no_sensors):
    meter = make_meter("auto", HOST, threads=2)
    assert meter.name == "model"
    assert isinstance(meter, ModelMeter) and meter.threads == 2


def test_auto_prefers_rapl_to_model(no_sensors):
    _rapl_zone(no_sensors, "intel-rapl:0", 1000, 10**9)
    assert make_meter("auto", HOST).name == "rapl"


def test_auto_on_this_machine_without_patches():
    rapl = Path("/sys/class/powercap/intel-rapl:0/energy_uj")
    present = [m for m in ("jtop", "ina219") if m in sys.modules or _importable(m)]
    if present or rapl.exists():
        pytest.skip(f"this machine has a power sensor module or RAPL ({present or rapl})")
    assert make_meter("auto", HOST).name == "model"


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize(
    ("name", "names"),
    [
        ("jtop", "jtop not found (pip install 'fedsim[jetson]', which installs jetson-stats"),
        ("ina219", "ina219 not found (pip install pi-ina219"),
        ("nvml", "pynvml not found (pip install nvidia-ml-py; needs an NVIDIA GPU and driver)"),
        ("rapl", "intel-rapl:0/energy_uj not found or not readable (needs an Intel/AMD Linux host"),
    ],
)
def test_missing_meter_is_one_line_naming_what_is_missing(no_sensors, name, names):
    with pytest.raises(UserError) as e:
        make_meter(name, HOST)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"meter {name!r}: ")
    assert names in msg
    assert msg.endswith("use --meter model")


def test_unknown_meter_lists_the_known_ones():
    with pytest.raises(
        UserError, match="unknown power meter 'joulescope'; expected one of: auto, csv, ina219"
    ):
        make_meter("joulescope", HOST)
    assert METERS.names() == ["csv", "ina219", "jtop", "model", "nvml", "rapl"]
