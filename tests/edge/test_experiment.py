"""Edge experiment files: defaults, one-line errors naming file, key path and expectation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from fedsim.config import Experiment
from fedsim.edge.experiment import experiment_data, raw_uint8
from fedsim.errors import ConfigError
from fedsim.loader import load_experiment

BASE: dict[str, Any] = {
    "name": "exp",
    "data": {"dataset": "shapes", "options": {"image_size": 32, "num_train": 50, "num_test": 20}},
}


def write(tmp_path: Path, extra: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> Path:
    data = {**BASE, **(extra or {})}
    for key in drop:
        data.pop(key)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def error_of(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_experiment(path, overrides)
    return str(info.value)


def test_defaults_follow_the_paper(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path))
    assert exp.split == "layer2" and exp.codec == "quant8" and exp.bottleneck_channels == [1, 2, 4, 8]
    assert exp.stage1.lr == 1e-3 and exp.stage2.lr == 1e-3
    assert (exp.stage2.momentum, exp.stage2.weight_decay, exp.stage2.mode) == (0.9, 5e-4, "kd")
    assert exp.teacher.path is None and exp.teacher.train is not None  # no checkpoint: train one
    assert exp.stages() == [1, 2]
    again = Experiment.model_validate(yaml.safe_load(exp.to_yaml()))  # the resolved file reloads
    assert again == exp


def test_unknown_key_one_line_with_allowed_keys(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, {"stage2": {"mdoe": "kd"}}))
    assert "\n" not in msg
    assert msg.startswith(str(tmp_path / "exp.yaml"))
    expected = "stage2.mdoe: unknown key; expected one of: batch_size, epochs, lr, mode, momentum"
    assert expected in msg


def test_top_level_unknown_key(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, {"stage3": {}}))
    assert "stage3: unknown key; expected one of:" in msg and "bottleneck_channels" in msg


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"codec": "zip"}, "codec: Input should be 'quant8', 'fp16' or 'none' (got 'zip')"),
        ({"split": "layer9"}, "split: Input should be"),
        ({"bottleneck_channels": [2, 2]}, "bottleneck_channels: C values must be distinct"),
        ({"bottleneck_channels": [0, 4]}, "bottleneck_channels: every C must be in 1..512"),
        ({"bottleneck_channels": []}, "bottleneck_channels: List should have at least 1 item"),
        ({"stage2": {"mode": "distill"}}, "stage2.mode: Input should be 'ft' or 'kd' (got 'distill')"),
        ({"stage1": {"lr": 0}}, "stage1.lr: Input should be greater than 0"),
        ({"stage1": {"epochs": 0}, "stage2": {"epochs": 0}}, "expected at least one stage to run"),
        ({"teacher": {"arch": "vgg"}}, "teacher.arch: Input should be 'small', 'resnet18'"),
        ({"teacher": {"train": {"epochs": "ten"}}}, "teacher.train.epochs: Input should be a valid integer"),
        ({"teacher": {"path": "no/such.pt"}}, "teacher: checkpoint 'no/such.pt' does not exist"),
        ({"name": "a b"}, "name: String should match pattern"),
        ({"data": {"dataset": "mnist"}}, "data.dataset: unknown dataset 'mnist'; expected one of:"),
        ({"data": {"dataset": "shapes", "options": {"image_size": 4}}}, "data.options.image_size"),
        ({"data": {"dataset": "shapes", "options": {"colour": 1}}}, "data.options.colour: unknown key"),
    ],
)
def test_invalid_values_one_line(tmp_path: Path, extra: dict[str, Any], expected: str) -> None:
    msg = error_of(write(tmp_path, extra))
    assert expected in msg
    assert "\n" not in msg
    assert msg.startswith(f"{tmp_path / 'exp.yaml'}: ")


def test_missing_name_and_checkpoint_with_train(tmp_path: Path) -> None:
    assert "name: required key is missing" in error_of(write(tmp_path, drop=("name",)))
    ckpt = tmp_path / "t.pt"
    torch.save({}, ckpt)
    msg = error_of(write(tmp_path, {"teacher": {"path": str(ckpt), "train": {"epochs": 1}}}))
    assert "teacher: give either path (a checkpoint) or train (train one here), not both" in msg
    exp = load_experiment(write(tmp_path, {"teacher": {"path": str(ckpt), "arch": "resnet18"}}))
    assert exp.teacher.path == ckpt and exp.teacher.train is None


def test_overrides_applied_and_named(tmp_path: Path) -> None:
    path = write(tmp_path)
    exp = load_experiment(path, ["bottleneck_channels=[3]", "stage2.mode=ft", "teacher.train.epochs=2"])
    assert (exp.bottleneck_channels, exp.stage2.mode, exp.teacher.train.epochs) == ([3], "ft", 2)
    msg = error_of(path, ["stage1.epochs=-1"])
    assert "(with --set stage1.epochs=-1): stage1.epochs: Input should be greater than or equal to 0" in msg
    assert "expected KEY.PATH=VALUE" in error_of(path, ["codec"])


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    assert "no such file; expected a YAML experiment file" in error_of(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert "not valid YAML at line" in error_of(bad)


def test_data_resized_and_raw_images_recovered() -> None:
    exp = Experiment.model_validate({"name": "d", "data": {"dataset": "digits", "image_size": 32}})
    data = experiment_data(exp)
    assert data.input_shape == (1, 32, 32) and data.x_test.shape[1:] == (1, 32, 32)
    raw = raw_uint8(data.x_test[:5], data.mean, data.std)
    assert raw.dtype == np.uint8 and raw.shape == (5, 32, 32, 1)
    assert raw.max() > 200 and raw.min() == 0  # white strokes on black survive the round trip
    same = Experiment.model_validate({"name": "d", "data": {"dataset": "digits"}})
    assert experiment_data(same).input_shape == (1, 8, 8)


def test_shipped_bottlefit_shapes_experiment_validates() -> None:
    exp = load_experiment(Path(__file__).parents[2] / "scenarios" / "bottlefit_shapes.yaml")
    assert exp.data.dataset == "shapes" and exp.data.options["image_size"] == 64
    assert exp.bottleneck_channels == [1, 2, 4, 8] and exp.codec == "quant8" and exp.stages() == [1, 2]
