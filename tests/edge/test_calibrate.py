"""Device calibration: scale factors from published ResNet-18 latencies, cached host measurements."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch

from fedsim.cache import cache_dir
from fedsim.edge.calibrate import Calibration, calibrate, device_ref_ms, host_key, time_scale
from fedsim.system.profiles import DEVICES


def _cal(host_ms: float) -> Calibration:
    return Calibration(
        host_ref_ms=host_ms,
        reference="resnet18 224x224 batch 1",
        threads=1,
        repeats=7,
        host="test",
        measured_at="2026-01-01T00:00:00+00:00",
    )


def test_device_reference_latencies():
    assert device_ref_ms(DEVICES.get("jetson-nano")) == pytest.approx(34.7)
    assert device_ref_ms(DEVICES.get("rpi4")) == pytest.approx(100.0)
    assert device_ref_ms(DEVICES.get("jetson-orin")) == pytest.approx(34.7 / 5)
    assert device_ref_ms(DEVICES.get("this-host")) is None


def test_time_scale_against_a_given_host():
    cal = _cal(host_ms=50.0)
    assert time_scale(DEVICES.get("jetson-nano"), cal) == pytest.approx(34.7 / 50.0)
    assert time_scale(DEVICES.get("rpi4"), cal) == pytest.approx(2.0)
    assert time_scale(DEVICES.get("this-host"), cal) == 1.0
    assert time_scale(DEVICES.get("rpi4"), _cal(host_ms=10.0)) == pytest.approx(10.0)


def test_to_dict_round_trips():
    cal = _cal(12.5)
    assert Calibration(**json.loads(json.dumps(cal.to_dict()))) == cal


@pytest.mark.slow
def test_calibrate_measures_caches_and_refreshes():
    rng_state = torch.random.get_rng_state()
    cal = calibrate(threads=1, repeats=3, refresh=True)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # the seeded export leaves global RNG alone
    assert 0.0 < cal.host_ref_ms < 10_000.0
    assert "resnet18 224x224 batch 1" in cal.reference and "onnxruntime" in cal.reference
    assert "median of 3 after 2 warm-ups" in cal.reference
    assert (cal.threads, cal.repeats) == (1, 3)
    assert f"{os.cpu_count()} CPUs" in cal.host

    folder = cache_dir() / "calibration"
    path = folder / f"{host_key()}-t1.json"
    assert (folder / "resnet18-224.onnx").stat().st_size > 40e6  # 11.7 M float32 parameters
    assert Calibration(**json.loads(path.read_text())) == cal
    mtime = path.stat().st_mtime_ns

    start = time.perf_counter()
    again = calibrate(threads=1, repeats=3)
    assert time.perf_counter() - start < 2 * cal.host_ref_ms / 1000  # a measurement runs the model 5 times
    assert again == cal
    assert path.stat().st_mtime_ns == mtime

    fresh = calibrate(threads=1, repeats=3, refresh=True)
    assert fresh.measured_at >= cal.measured_at
    assert path.stat().st_mtime_ns > mtime
    assert Calibration(**json.loads(path.read_text())) == fresh
    assert fresh != cal  # a new measurement (its timings differ at float resolution)


@pytest.mark.slow
def test_a_different_repeat_count_or_a_corrupt_cache_measures_again():
    first = calibrate(threads=1, repeats=3)
    path = cache_dir() / "calibration" / f"{host_key()}-t1.json"
    other = calibrate(threads=1, repeats=2)
    assert other.repeats == 2 and other != first
    path.write_text("{not json")
    repaired = calibrate(threads=1, repeats=2)
    assert repaired.repeats == 2 and repaired.host_ref_ms > 0
    assert Calibration(**json.loads(path.read_text())) == repaired


def test_bad_arguments():
    with pytest.raises(ValueError, match="threads and repeats must be >= 1"):
        calibrate(threads=0)
