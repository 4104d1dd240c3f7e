"""Virtual compute time of a client's local training on its device.

``flops`` (default, deterministic)
    ``train_flops_per_sample * num_examples * local_epochs / device throughput``, the
    FLOPs of one training step (forward and backward of the scenario's model) counted
    once per run with :class:`torch.utils.flop_counter.FlopCounterMode` (matrix
    multiplications and convolutions; element-wise work and the optimiser step are left
    out; so are layers an algorithm adds to the scenario's model, such as FedLoGe's
    auxiliary head). Depends only on the scenario, so the same seed gives the same
    timeline.
``measured`` (not deterministic)
    the CPU seconds the client reported (``cpu_s``) scaled by ``host / device``
    throughput, the host's throughput calibrated once per run by timing the same
    training step. CPU time varies from run to run, so does the timeline.

A device profile whose ``gflops`` is ``None`` (``this-host``) uses the calibrated host
throughput in both modes, which makes its timeline non-deterministic too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from fedsim.config import Scenario
from fedsim.memo import Memo, memo
from fedsim.system.profiles import DeviceProfile

#: Samples in the batch whose training step is counted or timed.
_PROBE_BATCH = 8


def _train_step(scenario: Scenario) -> tuple[Callable[[], None], int]:
    """One forward/backward pass of the scenario's model on a batch of its data, and
    the batch's size."""
    from fedsim.workspace import federated_data, new_model

    model = new_model(scenario)
    model.train()
    ds = federated_data(scenario).dataset
    x, y = ds.train.rows(slice(0, _PROBE_BATCH)), ds.y_train[:_PROBE_BATCH]

    def step() -> None:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()

    return step, len(y)


_FLOPS: Memo[float] = memo("system.flops_per_sample", 8)  # key: scenario JSON
_HOST_GFLOPS: Memo[float] = memo("system.host_gflops", 8)  # key: scenario JSON


def _flops_per_sample(text: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from fedsim.workspace import scenario_of

    step, n = _train_step(scenario_of(text))
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / n


def train_flops_per_sample(scenario: Scenario) -> float:
    """FLOPs of one training sample (forward + backward), counted once per process."""
    text = scenario.to_json()
    return _FLOPS.get(text, lambda: _flops_per_sample(text))


def _host_gflops(text: str) -> float:
    from fedsim.workspace import scenario_of

    scenario = scenario_of(text)
    step, n = _train_step(scenario)
    step()  # warm-up
    repeats, t0 = 0, time.process_time()
    while repeats < 5 or time.process_time() - t0 < 0.2:
        step()
        repeats += 1
    seconds = (time.process_time() - t0) / repeats
    return train_flops_per_sample(scenario) * n / seconds / 1e9


def host_gflops(scenario: Scenario) -> float:
    """This host's effective training throughput on the scenario's model (measured once)."""
    text = scenario.to_json()
    return _HOST_GFLOPS.get(text, lambda: _host_gflops(text))


def device_gflops(scenario: Scenario, device: DeviceProfile) -> float:
    """The device's throughput; the calibrated host's for ``this-host``."""
    return device.gflops if device.gflops is not None else host_gflops(scenario)


def flops_compute_s(scenario: Scenario, device: DeviceProfile, row: dict[str, Any]) -> float:
    """Counted FLOPs of the client's local training over the device's throughput."""
    work = train_flops_per_sample(scenario) * int(row.get("num_examples", 0)) * scenario.train.local_epochs
    return work / (device_gflops(scenario, device) * 1e9)


def measured_compute_s(scenario: Scenario, device: DeviceProfile, row: dict[str, Any]) -> float:
    """The client's measured CPU seconds scaled from this host to the device."""
    return float(row.get("cpu_s", 0.0)) * host_gflops(scenario) / device_gflops(scenario, device)


#: ``system.compute`` -> f(scenario, device, client row) -> virtual seconds
COMPUTE_MODELS: dict[str, Callable[[Scenario, DeviceProfile, dict[str, Any]], float]] = {
    "flops": flops_compute_s,
    "measured": measured_compute_s,
}
