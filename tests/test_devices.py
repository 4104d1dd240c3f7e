"""``train.device``: where the arithmetic runs; models come back to the CPU after each block.

The CPU tests run everywhere. The parity tests need a CUDA device (they run where one is,
never in CI): each algorithm's tiny run on ``cuda`` ends where the same run on the CPU ends.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from fedsim.devices import CPU, module_device, move_optimizer, placed, resolve
from fedsim.errors import UserError
from tests.helpers import cli

QUIET = Console(quiet=True)
HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
without_cuda = pytest.mark.skipif(HAS_CUDA, reason="checks the error of a machine without CUDA")


def test_cpu_and_auto_resolve_on_any_machine() -> None:
    assert resolve("cpu") == CPU
    assert resolve("auto") == (torch.device("cuda") if HAS_CUDA else CPU)


@without_cuda
def test_a_missing_cuda_device_is_one_line_naming_it() -> None:
    with pytest.raises(
        UserError, match=r"train.device is 'cuda:1' but this machine has no cuda device .*cpu or auto"
    ):
        resolve("cuda:1")


def test_placed_on_the_cpu_moves_nothing() -> None:
    net = nn.Linear(3, 2)
    pointer = net.weight.data_ptr()
    with placed(CPU, net) as device:
        assert device == CPU and net.weight.data_ptr() == pointer
    assert module_device(nn.Sequential()) == CPU
    assert module_device(nn.BatchNorm1d(2, affine=False)) == CPU  # buffers only


def test_move_optimizer_keeps_the_step_counter_where_torch_wants_it() -> None:
    net = nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = opt.state[net.weight]
    move_optimizer(opt, CPU)
    assert state["step"].dim() == 0 and state["exp_avg"].device == CPU


@without_cuda
def test_run_naming_cuda_on_a_cpu_machine_exits_2_before_any_folder(write_scenario, tmp_path: Path) -> None:
    path = write_scenario()
    out = cli("run", str(path), "--set", "train.device=cuda")
    assert out.returncode == 2, out.stderr
    lines = [x for x in out.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "train.device is 'cuda'" in lines[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_an_unknown_device_name_is_refused_by_the_schema(write_scenario) -> None:
    out = cli("validate", str(write_scenario({"train": {"device": "gpu"}})))
    assert out.returncode == 2 and "train.device" in out.stderr and "Traceback" not in out.stderr


def test_cohorts_stay_on_the_cpu(write_scenario) -> None:
    from fedsim.algorithms import cohort_plan
    from fedsim.loader import load_scenario

    path = write_scenario({"train": {"vectorise": "auto"}})
    assert cohort_plan(load_scenario(path))[0]
    if HAS_CUDA:
        vectorised, why = cohort_plan(load_scenario(path, ["train.device=cuda"]))
        assert not vectorised and "train.device is cuda" in why


# ----------------------------------------------------------------------------- CUDA parity


def _final(path: Path, device: str) -> dict[str, float]:
    from fedsim.runner import start_run

    folder, summary = start_run(path, [f"train.device={device}"], None, False, False, QUIET)
    assert summary["status"] == "completed", summary
    rows = [json.loads(x) for x in (folder.path / "metrics.jsonl").read_text().splitlines()]
    return {
        k: v for k, v in rows[-1].items() if isinstance(v, float) and k.endswith(("accuracy", "loss", "rsum"))
    }


def _scenario(write_scenario, tmp_path: Path, algorithm: str) -> Path:
    from tests.test_creamfl import creamfl_scenario
    from tests.test_fedloge import fedloge_scenario
    from tests.test_pfedpg import prompt_scenario

    writers = {
        "fedavg": lambda: write_scenario({"rounds": 2}),
        "fedprox": lambda: write_scenario({"rounds": 2, "algorithm": {"name": "fedprox", "mu": 0.1}}),
        "fedloge": lambda: fedloge_scenario(write_scenario, rounds=2),
        "pfedpg": lambda: prompt_scenario(tmp_path, "pfedpg"),
        "creamfl": lambda: creamfl_scenario(write_scenario),
    }
    return writers[algorithm]()


@needs_cuda
@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["fedavg", "fedprox", "fedloge", "pfedpg", "creamfl"])
def test_a_run_on_cuda_ends_where_the_cpu_run_ends(write_scenario, tmp_path: Path, algorithm: str) -> None:
    path = _scenario(write_scenario, tmp_path, algorithm)
    cpu, gpu = _final(path, "cpu"), _final(path, "cuda")
    assert cpu.keys() == gpu.keys() and cpu
    for key, value in cpu.items():
        assert gpu[key] == pytest.approx(value, rel=0.05, abs=0.02), key
