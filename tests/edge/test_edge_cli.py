"""``fedsim edge`` as a user runs it: train, resume, evaluate, export, profile, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from rich.console import Console

from fedsim.edge import stages
from fedsim.edge.train import TrainProgress, resume_training, start_training
from tests.helpers import cli, only_run, rows

TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 4,
    "data": {"dataset": "shapes", "options": {"image_size": 32, "num_train": 200, "num_test": 100}},
    "teacher": {"width": 8, "train": {"epochs": 1}},
    "bottleneck_channels": [2],
    "stage1": {"epochs": 1},
    "stage2": {"epochs": 1},
}
PAYLOAD = 2 * 17 * 17 + 5  # C x 17 x 17 uint8, float32 scale, uint8 zero point


def write(folder: Path, extra: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {**TINY, "output": {"dir": str(folder / "runs")}, **(extra or {})}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def weights(run: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / name, weights_only=True)["model"]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One tiny run through the real command line."""
    root = tmp_path_factory.mktemp("edge-cli")
    res = cli("edge", "train", str(write(root)), "--quiet", "--threads", "1")
    assert res.returncode == 0, res.stderr
    return only_run(root / "runs"), res


@pytest.mark.slow
def test_train_writes_the_run_folder(trained) -> None:
    run, res = trained
    assert "completed: 2/2 steps" in res.stdout and run.name in res.stdout.replace("\n", "")
    assert {"experiment.yaml", "results.jsonl", "summary.json", "checkpoints"} <= {
        p.name for p in run.iterdir()
    }
    exp = yaml.safe_load((run / "experiment.yaml").read_text())
    assert exp["stage2"]["mode"] == "kd" and exp["stage1"]["lr"] == 1e-3  # resolved: defaults filled in
    results = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    assert [(r["C"], r["stage"], r["mode"]) for r in results] == [(2, 1, "ghnd"), (2, 2, "kd")]
    for r in results:
        assert r["payload_bytes"] == PAYLOAD and r["bottleneck_shape"] == [2, 17, 17]
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["codec_accuracy"] <= 1 and r["elapsed_s"] > 0
        assert r["accuracy_loss_points"] == pytest.approx(100 * (r["teacher_accuracy"] - r["codec_accuracy"]))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_completed"] == summary["steps_planned"] == 2
    assert summary["teacher"]["source"] in ("trained", "cache") and summary["final"]["2"] == results[-1]
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["C2-stage1.pt", "C2-stage2.pt", "teacher.pt"]  # no epoch checkpoint left over


@pytest.mark.slow
def test_evaluate_prints_the_table_and_writes_json(trained) -> None:
    run, _ = trained
    res = cli("edge", "evaluate", str(run), "--threads", "1")
    assert res.returncode == 0, res.stderr
    for text in ("batch size 1", "payload B (quant8)", "% of raw", "% of JPEG", "head MFLOPs", str(PAYLOAD)):
        assert text in res.stdout
    out = json.loads((run / "evaluate.json").read_text())
    assert out["test_images"] == 100 and out["input"]["raw_bytes"] == 3 * 32 * 32
    (row,) = out["rows"]
    assert row["C"] == 2 and row["payload_bytes"] == PAYLOAD
    assert row["payload_share_raw"] == pytest.approx(PAYLOAD / 3072)
    assert out["input"]["jpeg_bytes"] > 0 and row["payload_share_jpeg"] > 0
    assert row["head_flops"] > 0 and row["head_flops"] < out["teacher"]["flops"]
    assert row["head_parameters"] > 0 and row["head_bytes"] >= 4 * row["head_parameters"]
    summary = json.loads((run / "summary.json").read_text())
    assert row["accuracy"] == pytest.approx(summary["final"]["2"]["codec_accuracy"], abs=0.011)


@pytest.mark.slow
def test_export_writes_onnx_and_manifest(trained, tmp_path: Path) -> None:
    run, _ = trained
    res = cli("edge", "export", str(run), "--out", str(tmp_path / "onnx"))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert manifest["codec"] == "quant8" and manifest["input_shape"] == [3, 32, 32]
    (model,) = manifest["models"]
    assert model["C"] == 2 and model["bottleneck_shape"] == [2, 17, 17]
    assert (tmp_path / "onnx" / model["head"]).is_file() and (tmp_path / "onnx" / model["tail"]).is_file()
    assert model["parity"]["same_predictions"] == model["parity"]["images"] == 100


@pytest.mark.slow
def test_stop_after_then_resume_matches_the_uninterrupted_run(trained, tmp_path: Path) -> None:
    full, _ = trained
    path = write(tmp_path)
    res = cli("edge", "train", str(path), "--quiet", "--stop-after", "1", "--threads", "1")
    assert res.returncode == 0, res.stderr
    run = only_run(tmp_path / "runs")
    assert "stopped: 1/2 steps" in res.stdout
    assert json.loads((run / "summary.json").read_text())["teacher"]["source"] == "cache"  # trained once
    res = cli("edge", "train", "--resume", str(run), "--quiet", "--threads", "1")
    assert res.returncode == 0, res.stderr
    assert "completed: 2/2 steps" in res.stdout
    assert rows(run / "results.jsonl") == rows(full / "results.jsonl")
    for name in ("C2-stage1.pt", "C2-stage2.pt"):
        assert same_weights(weights(run, name), weights(full, name))
    res = cli("edge", "train", "--resume", str(run), "--quiet")  # a completed run stays as it is
    assert res.returncode == 0 and "completed: 2/2 steps" in res.stdout


@pytest.mark.slow
def test_interrupted_mid_stage_resumes_from_the_epoch_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = write(tmp_path, {"stage1": {"epochs": 3}, "stage2": {"epochs": 0}})
    quiet = TrainProgress(Console(), bars=False, log=False)
    real_run_epoch, calls = stages.run_epoch, []

    def interrupt_in_epoch_3(stage, x, y, seed, channels, epoch):
        calls.append(epoch)
        if epoch == 2:
            raise KeyboardInterrupt
        return real_run_epoch(stage, x, y, seed, channels, epoch)

    monkeypatch.setattr(stages, "run_epoch", interrupt_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        start_training(path, [], quiet)
    run = only_run(tmp_path / "runs")
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    assert (run / "checkpoints" / "C2-stage1-epoch.pt").is_file()
    assert torch.load(run / "checkpoints" / "C2-stage1-epoch.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(stages, "run_epoch", real_run_epoch)
    _, summary = resume_training(run, quiet)
    assert summary["status"] == "completed" and calls == [0, 1, 2]
    assert not (run / "checkpoints" / "C2-stage1-epoch.pt").exists()
    start_training(path, ["name=fresh"], quiet)
    fresh_run = next(p for p in (tmp_path / "runs").iterdir() if p.name.startswith("fresh"))
    assert same_weights(weights(run, "C2-stage1.pt"), weights(fresh_run, "C2-stage1.pt"))
    assert rows(run / "results.jsonl") == rows(fresh_run / "results.jsonl")


@pytest.mark.parametrize(
    ("extra", "args", "expected"),
    [
        ({"stage2": {"mode": "distil"}}, [], "tiny.yaml: stage2.mode: Input should be 'ft' or 'kd'"),
        ({}, ["--set", "bottleneck_channels=[4,4]"], "bottleneck_channels: C values must be distinct"),
        ({}, ["--resume", "nowhere"], "give either an EXPERIMENT file or --resume"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path: Path, extra, args, expected) -> None:
    res = cli("edge", "train", str(write(tmp_path, extra)), "--quiet", *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert expected in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_missing_run_folder_is_one_line(tmp_path: Path) -> None:
    res = cli("edge", "evaluate", str(tmp_path / "nothing"))
    assert res.returncode == 2 and "no such run folder" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_profile_prints_the_split_points() -> None:
    res = cli("edge", "profile", "small", "--size", "32", "--repeats", "1", "--warmup", "0")
    assert res.returncode == 0, res.stderr
    for text in ("small at 32x32", "stem", "layer2", "pool_fc", "quant8 B", "cumulative ms"):
        assert text in res.stdout


def test_flops_count_conv_and_linear_macs_twice() -> None:
    from torch import nn

    from fedsim.edge.evaluate import count_flops, size_of

    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2)
    )
    model = nn.Sequential(model, nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    conv1 = 4 * 8 * 8 * 3 * 9
    conv2 = 4 * 4 * 4 * 2 * 9  # groups=2: 2 input channels per output
    linear = 64 * 5
    assert count_flops(model, (3, 8, 8)) == 2 * (conv1 + conv2 + linear)
    assert model.training  # mode restored
    params = sum(p.numel() for p in model.parameters())
    assert size_of(model) == {"parameters": params, "bytes": 4 * params + 4 * 4 * 2 + 8}
