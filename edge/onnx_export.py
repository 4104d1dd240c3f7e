"""ONNX export of the head (device) and tail (server) of each split model, with parity checks.

For every C of a run, ``OUT/C{c}/head.onnx`` maps ``image [B, 3, H, W]`` (normalised) to
``bottleneck [B, C, h, w]`` and ``OUT/C{c}/tail.onnx`` maps ``bottleneck`` to ``logits``;
the batch axis is dynamic. Each file passes ``onnx.checker``; onnxruntime then runs both
on the whole test set and must match PyTorch (max absolute difference at most 1e-4 in
fp32) and give the same predicted class through head -> codec -> tail for every image.
``OUT/teacher.onnx`` is the whole unmodified model (``image`` -> ``logits``) that local
computing and edge offloading run. ``OUT/manifest.json`` lists the files with the input
and bottleneck shapes, the codec, the split point and the dataset spec.

The default (dynamo) exporter needs ``onnxscript``; without it, or if it fails, the
TorchScript exporter (``dynamo=False``) is used, and the manifest says which.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsim.edge.bottlefit import SplitClassifier
from fedsim.edge.codec import decode_batch, encode_batch
from fedsim.edge.experiment import experiment_data
from fedsim.errors import UserError

ATOL = 1e-4
OPSET = 17
MANIFEST_FILE = "manifest.json"
FULL_FILE = "teacher.onnx"


def export_module(
    module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str
) -> str:
    """Export ``module`` (eval mode) to ``path`` with a dynamic batch axis; returns the exporter used.

    Parameters
    ----------
    module : nn.Module
        The module; exported in eval mode.
    example : torch.Tensor
        An example input (its batch size does not matter).
    path : Path
        The ``.onnx`` file to write.
    input_name, output_name : str
        Names of the graph's input and output.

    Returns
    -------
    str
        ``"dynamo"`` or ``"torchscript"``.
    """
    module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("onnxscript") is not None:
        try:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=[input_name],
                output_names=[output_name],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=max(OPSET, 18),
                dynamo=True,
            )
            return "dynamo"
        except Exception as exc:  # fall back to the TorchScript exporter below
            warnings.warn(f"dynamo ONNX export failed ({exc}); using dynamo=False", stacklevel=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return "torchscript"


def check_model(path: Path) -> None:
    """``onnx.checker.check_model`` with shape inference (raises on an invalid model)."""
    import onnx

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def ort_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of ``path``, quiet, with ``threads`` intra-op threads (None: its default).

    Sessions are thread-safe: one session may serve concurrent ``run`` calls.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtModel:
    """An onnxruntime session over one input and one output (CPU)."""

    def __init__(self, path: Path) -> None:
        self.session = ort_session(path)
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Run on a float32 batch."""
        out = self.session.run(None, {self.input: x.detach().numpy().astype(np.float32)})[0]
        return torch.from_numpy(out)


@torch.no_grad()
def check_parity(
    model: SplitClassifier,
    head: OrtModel,
    tail: OrtModel,
    codec: str,
    x: torch.Tensor,
    batch_size: int = 250,
) -> dict[str, Any]:
    """Compare onnxruntime with PyTorch on ``x``: raw outputs, and predictions through the codec.

    Returns
    -------
    dict
        ``head_max_abs_diff`` and ``tail_max_abs_diff`` (tail fed the same decoded
        bottleneck), ``images``, and ``same_predictions`` (count of images whose class via
        head -> codec -> tail is the same in both).
    """
    model.eval()
    torch_tail = model.tail
    head_diff = tail_diff = 0.0
    same = 0
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        z_pt, z_ort = model.head(xb), head(xb)
        head_diff = max(head_diff, float((z_pt - z_ort).abs().max()))
        zq_pt = decode_batch(encode_batch(codec, z_pt))
        zq_ort = decode_batch(encode_batch(codec, z_ort))
        logits_pt = torch_tail(zq_pt)
        tail_diff = max(tail_diff, float((logits_pt - tail(zq_pt)).abs().max()))
        same += int((logits_pt.argmax(1) == tail(zq_ort).argmax(1)).sum())
    return {
        "images": len(x),
        "head_max_abs_diff": head_diff,
        "tail_max_abs_diff": tail_diff,
        "same_predictions": same,
    }


def export_split(model: SplitClassifier, example: torch.Tensor, out: Path) -> dict[str, Any]:
    """Export and check ``out/head.onnx`` and ``out/tail.onnx``; file names and exporter used."""
    model.eval()
    with torch.no_grad():
        z = model.head(example)
    head_path, tail_path = out / "head.onnx", out / "tail.onnx"
    exporter = export_module(model.head, example, head_path, "image", "bottleneck")
    export_module(model.tail, z, tail_path, "bottleneck", "logits")
    for path in (head_path, tail_path):
        check_model(path)
    return {"head": head_path, "tail": tail_path, "exporter": exporter, "bottleneck_shape": list(z.shape[1:])}


@torch.no_grad()
def export_full(model: nn.Module, x: torch.Tensor, out: Path, batch_size: int = 250) -> dict[str, Any]:
    """Export the whole unmodified model (local computing and edge offloading run it) as ``teacher.onnx``.

    Raises
    ------
    UserError
        When onnxruntime disagrees with PyTorch on ``x`` (logits beyond :data:`ATOL` or a
        different class).
    """
    model.eval()
    path = out / FULL_FILE
    exporter = export_module(model, x[:2], path, "image", "logits")
    check_model(path)
    ort_model = OrtModel(path)
    diff, same = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        a, b = model(xb), ort_model(xb)
        diff = max(diff, float((a - b).abs().max()))
        same += int((a.argmax(1) == b.argmax(1)).sum())
    if diff > ATOL or same != len(x):
        raise UserError(
            f"whole model: onnxruntime disagrees with PyTorch (max abs diff {diff:.2e}, expected <= {ATOL}; "
            f"{same}/{len(x)} identical predictions)"
        )
    return {
        "file": FULL_FILE,
        "exporter": exporter,
        "max_abs_diff": diff,
        "same_predictions": same,
        "images": len(x),
    }


def export_run(run: Path, out: Path, limit: int | None = None) -> dict[str, Any]:
    """Export every trained C of a run to ``out``, verify it, and write ``out/manifest.json``.

    Parameters
    ----------
    run : Path
        An edge run folder (each C exported after its latest finished stage).
    out : Path
        Output folder (created; existing files of the same names are replaced).
    limit : int, optional
        Check parity on the first ``limit`` test images only (default: all).

    Returns
    -------
    dict
        The manifest.

    Raises
    ------
    UserError
        When the run has no trained model, or onnxruntime disagrees with PyTorch.
    """
    from fedsim.edge.runfolder import EdgeRun, load_student, load_teacher

    folder = EdgeRun(run)
    exp = folder.experiment()
    data = experiment_data(exp)
    teacher = load_teacher(folder, exp, data)
    x = data.x_test[:limit]
    shape = data.input_shape
    entries = []
    for c in exp.bottleneck_channels:
        if folder.last_stage(exp, c) is None:
            continue
        student, stage = load_student(folder, exp, teacher, c, shape[1])
        files = export_split(student, x[:2], out / f"C{c}")
        parity = check_parity(student, OrtModel(files["head"]), OrtModel(files["tail"]), exp.codec, x)
        worst = max(parity["head_max_abs_diff"], parity["tail_max_abs_diff"])
        if worst > ATOL or parity["same_predictions"] != parity["images"]:
            raise UserError(
                f"C={c}: onnxruntime disagrees with PyTorch (max abs diff {worst:.2e}, expected <= {ATOL}; "
                f"{parity['same_predictions']}/{parity['images']} identical predictions)"
            )
        entries.append(
            {
                "C": c,
                "stage": stage,
                "head": str(files["head"].relative_to(out)),
                "tail": str(files["tail"].relative_to(out)),
                "bottleneck_shape": files["bottleneck_shape"],
                "exporter": files["exporter"],
                "parity": parity,
            }
        )
    if not entries:
        raise UserError(f"{run}: no trained model to export; expected a finished stage for some C")
    full = export_full(teacher, x, out)
    manifest = {
        "run": str(folder.path),
        "name": exp.name,
        "split": exp.split,
        "data": {**exp.data.model_dump(mode="json"), "seed": exp.seed},
        "full": full,
        "codec": exp.codec,
        "input_shape": list(shape),
        "input_name": "image",
        "bottleneck_name": "bottleneck",
        "output_name": "logits",
        "mean": list(data.mean),
        "std": list(data.std),
        "class_names": list(data.class_names),
        "models": entries,
    }
    tmp = out / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST_FILE)
    return manifest
