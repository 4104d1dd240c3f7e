"""Fixtures for the edge tests: one thread, and a tiny trained and exported BottleFit run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console

from fedsim.edge.train import TrainProgress, start_training


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convolutions on one thread: OpenMP spin-waits make them 10x slower on a busy 2-core host."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-edge-run")
    exp = {
        "name": "onnx",
        "seed": 2,
        "data": {"dataset": "shapes", "options": {"image_size": 32, "num_train": 120, "num_test": 60}},
        "teacher": {"width": 8, "train": {"epochs": 1}},
        "bottleneck_channels": [1, 3],
        "stage1": {"epochs": 1},
        "stage2": {"epochs": 1, "mode": "ft"},
        "output": {"dir": str(root / "runs")},
    }
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder, summary = start_training(path, [], TrainProgress(Console(), bars=False, log=False))
    finally:
        torch.set_num_threads(threads)
    assert summary["status"] == "completed"
    return folder.path


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ONNX export (head, tail per C, whole model, manifest) of :func:`tiny_run`."""
    from fedsim.edge.onnx_export import export_run

    out = tmp_path_factory.mktemp("tiny-edge-onnx")
    export_run(tiny_run, out)
    return out
