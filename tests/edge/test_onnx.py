"""ONNX export of head and tail: valid models, onnxruntime parity with PyTorch, manifest."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from fedsim.edge.bottlefit import inject_bottleneck
from fedsim.edge.experiment import experiment_data
from fedsim.edge.onnx_export import ATOL, OrtModel, check_parity, export_run, export_split
from fedsim.edge.resnet import small_resnet
from fedsim.loader import load_experiment


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    teacher = small_resnet(5, 3, width=8)
    model = inject_bottleneck(teacher, "layer2", channels=3, input_size=16)
    with torch.no_grad():  # non-trivial batch-norm statistics, so eval mode matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_head_and_tail_export_check_and_match(student, tmp_path: Path) -> None:
    files = export_split(student, torch.randn(2, 3, 16, 16), tmp_path)
    assert files["bottleneck_shape"] == [3, 9, 9]
    for name in ("head.onnx", "tail.onnx"):
        onnx.checker.check_model(onnx.load(str(tmp_path / name)), full_check=True)
    head, tail = OrtModel(files["head"]), OrtModel(files["tail"])
    x = torch.randn(40, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for batch in (1, 7, 40):  # the batch axis is dynamic
        with torch.no_grad():
            z = student.head(x[:batch])
            assert head(x[:batch]).shape == z.shape
            assert (head(x[:batch]) - z).abs().max() <= ATOL
            assert (tail(z) - student.tail(z)).abs().max() <= ATOL
    for codec in ("quant8", "fp16", "none"):
        parity = check_parity(student, head, tail, codec, x)
        assert parity["images"] == 40 and parity["same_predictions"] == 40
        assert parity["head_max_abs_diff"] <= ATOL and parity["tail_max_abs_diff"] <= ATOL


def test_parity_check_notices_a_different_model(student, tmp_path: Path) -> None:
    other = copy.deepcopy(student)
    with torch.no_grad():
        other.kept[-1][-1].weight.mul_(-1.0)  # the classifier's sign flipped
    files = export_split(other, torch.randn(1, 3, 16, 16), tmp_path)
    x = torch.randn(20, 3, 16, 16)
    parity = check_parity(student, OrtModel(files["head"]), OrtModel(files["tail"]), "quant8", x)
    assert parity["tail_max_abs_diff"] > 1e-2 and parity["same_predictions"] < 20


def test_export_run_writes_models_and_manifest(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "onnx"
    manifest = export_run(tiny_run, out)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["codec"] == "quant8" and manifest["input_shape"] == [3, 32, 32]
    assert [m["C"] for m in manifest["models"]] == [1, 3]
    exp = load_experiment(tiny_run / "experiment.yaml")
    n_test = len(experiment_data(exp).y_test)
    for m in manifest["models"]:
        assert m["stage"] == 2 and m["exporter"] in ("dynamo", "torchscript")
        assert m["bottleneck_shape"] == [m["C"], 17, 17]
        p = m["parity"]
        assert p["images"] == n_test and p["same_predictions"] == n_test  # the whole test set
        assert max(p["head_max_abs_diff"], p["tail_max_abs_diff"]) <= ATOL
        head = onnx.load(str(out / m["head"]))
        dims = head.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]
        tail = onnx.load(str(out / m["tail"]))
        dims = tail.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == m["bottleneck_shape"]
    full = manifest["full"]  # the unmodified model for local computing and offloading
    assert full["file"] == "teacher.onnx" and full["same_predictions"] == full["images"] == n_test
    assert full["max_abs_diff"] <= ATOL
    assert manifest["data"]["dataset"] == "shapes" and manifest["data"]["seed"] == 2
    assert manifest["split"] == "layer2"
