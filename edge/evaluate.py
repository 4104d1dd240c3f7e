"""Evaluating split models: accuracy through the codec, payload, head size and FLOPs.

:func:`evaluate_run` runs every C of a finished run at batch size 1, as a device would:
head on one image, encode the bottleneck, decode it, tail. It compares the payload with
what offloading would send for the same image (raw uint8 pixels, or a JPEG at quality 95)
and writes ``RUN/evaluate.json``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsim.edge.bottlefit import SplitClassifier
from fedsim.edge.codec import CODECS, decode_batch, encode_batch, jpeg_nbytes, raw_nbytes
from fedsim.edge.experiment import experiment_data, raw_uint8
from fedsim.edge.flops import count_flops
from fedsim.training import evaluate

EVALUATE_FILE = "evaluate.json"


@torch.no_grad()
def split_accuracy(
    model: SplitClassifier, codec: str, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256
) -> dict[str, Any]:
    """Accuracy of head -> codec (per sample) -> tail, in batches; and the payload size.

    Parameters
    ----------
    model : SplitClassifier
        The split model (put in eval mode).
    codec : str
        A registered codec name.
    x, y : torch.Tensor
        Normalised images and labels.
    batch_size : int
        Batch size of the head and tail (the codec always works per sample).

    Returns
    -------
    dict
        ``accuracy``, ``payload_bytes`` (mean per sample), ``bottleneck_shape`` [C, h, w].
    """
    model.eval()
    tail = model.tail
    correct, payload, shape = 0, 0, None
    for start in range(0, len(y), batch_size):
        z = model.head(x[start : start + batch_size])
        encoded = encode_batch(codec, z)
        payload += sum(e.payload_nbytes for e in encoded)
        shape = list(z.shape[1:])
        logits = tail(decode_batch(encoded))
        correct += int((logits.argmax(1) == y[start : start + batch_size]).sum())
    n = max(len(y), 1)
    return {"accuracy": correct / n, "payload_bytes": payload / n, "bottleneck_shape": shape}


def size_of(module: nn.Module) -> dict[str, int]:
    """Parameter count and bytes of parameters plus buffers (as stored, fp32)."""
    params = sum(p.numel() for p in module.parameters())
    nbytes = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
    return {"parameters": params, "bytes": nbytes}


@torch.no_grad()
def per_sample(model: SplitClassifier, codec: str, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, float]:
    """Batch-size-1 inference through the codec: predictions, payload bytes, mean head time (s)."""
    model.eval()
    tail, head, c = model.tail, model.head, CODECS.get(codec)
    preds = np.empty(len(x), dtype=np.int64)
    payload = np.empty(len(x), dtype=np.int64)
    head_s = 0.0
    for i in range(len(x)):
        t0 = time.perf_counter()
        z = head(x[i : i + 1])
        head_s += time.perf_counter() - t0
        enc = c.encode(z[0])
        payload[i] = enc.payload_nbytes
        preds[i] = int(tail(c.decode(enc).unsqueeze(0)).argmax(1))
    return preds, payload, head_s / max(len(x), 1)


def image_bytes(
    x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Per image: raw uint8 bytes and JPEG (quality 95) bytes of the un-normalised image."""
    images = raw_uint8(x, mean, std)
    raw = np.array([raw_nbytes(im) for im in images], dtype=np.int64)
    jpeg = np.array([jpeg_nbytes(im, quality=95) for im in images], dtype=np.int64)
    return raw, jpeg


def evaluate_run(path: Any, limit: int | None = None) -> dict[str, Any]:
    """Evaluate every C of a run at batch size 1; write and return ``RUN/evaluate.json``.

    Parameters
    ----------
    path : path-like
        The run folder (each C evaluated after its latest finished stage).
    limit : int, optional
        Use only the first ``limit`` test images.

    Returns
    -------
    dict
        ``teacher`` (accuracy, parameters, FLOPs), ``input`` (shape, raw and JPEG bytes)
        and ``rows``: one dict per C.
    """
    from fedsim.edge.runfolder import EdgeRun, load_student, load_teacher

    folder = EdgeRun(path)
    exp = folder.experiment()
    data = experiment_data(exp)
    x, y = data.x_test[:limit], data.y_test[:limit]
    teacher = load_teacher(folder, exp, data)
    teacher_acc = evaluate(teacher, x, y).accuracy
    raw, jpeg = image_bytes(x, data.mean, data.std)
    shape = data.input_shape
    rows = []
    for c in exp.bottleneck_channels:
        if folder.last_stage(exp, c) is None:
            continue
        student, stage = load_student(folder, exp, teacher, c, shape[1])
        preds, payload, head_s = per_sample(student, exp.codec, x)
        acc = int((torch.from_numpy(preds) == y).sum()) / max(len(y), 1)
        head = size_of(student.head)
        rows.append(
            {
                "C": c,
                "stage": stage,
                "accuracy": acc,
                "accuracy_loss_points": 100.0 * (teacher_acc - acc),
                "codec": exp.codec,
                "payload_bytes": float(payload.mean()),
                "payload_share_raw": float((payload / raw).mean()),
                "payload_share_jpeg": float((payload / jpeg).mean()),
                "bottleneck_shape": list(student.head(x[:1]).shape[1:]),
                "head_parameters": head["parameters"],
                "head_bytes": head["bytes"],
                "head_flops": count_flops(student.head, shape),
                "tail_flops": count_flops(student.tail, tuple(student.head(x[:1]).shape[1:])),
                "head_ms": 1000.0 * head_s,
            }
        )
    result = {
        "run": str(folder.path),
        "codec": exp.codec,
        "test_images": len(y),
        "teacher": {
            "accuracy": teacher_acc,
            **size_of(teacher),
            "flops": count_flops(teacher, shape),
        },
        "input": {
            "shape": list(shape),
            "raw_bytes": float(raw.mean()),
            "jpeg_bytes": float(jpeg.mean()),
        },
        "rows": rows,
    }
    tmp = folder.path / f".{EVALUATE_FILE}.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, folder.path / EVALUATE_FILE)
    return result
