"""What the device needs before its first request: model description, ONNX files, test images.

From a local ONNX folder (``fedsim edge export``) or from the server (``Info`` and
``GetModel``, cached by content hash).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.edge.proto import pb
from fedsim.edge.worker.connection import Connection
from fedsim.errors import UserError


@dataclass
class Served:
    """What the device needs: model description, ONNX paths, test images."""

    manifest: dict[str, Any]
    full_path: Path
    head_paths: dict[int, Path]
    bottlenecks: dict[int, list[int]]
    server_device: str = "this-host"


def from_folder(folder: Path) -> Served:
    """Models and description from a local ONNX folder."""
    from fedsim.edge.onnx_export import MANIFEST_FILE

    file = folder / MANIFEST_FILE
    if not file.is_file():
        raise UserError(
            f"--model {folder}: no {MANIFEST_FILE}; expected a folder written by fedsim edge export"
        )
    m = json.loads(file.read_text())
    return Served(
        manifest=m,
        full_path=folder / m["full"]["file"],
        head_paths={int(e["C"]): folder / e["head"] for e in m["models"]},
        bottlenecks={int(e["C"]): e["bottleneck_shape"] for e in m["models"]},
    )


def from_server(
    conn: Connection, info: pb.InfoReply, need_full: bool, channels: int | None, every_head: bool = False
) -> Served:
    """Models (downloaded once, cached) and description from the server's Info: the head of
    ``channels`` (default: the smallest C's), or ``every_head``."""
    manifest = {
        "name": info.model,
        "split": info.split,
        "codec": info.codec,
        "input_shape": list(info.input_shape),
        "mean": list(info.mean),
        "std": list(info.std),
        "class_names": list(info.class_names),
        "data": json.loads(info.data_json or "{}"),
    }
    heads = {}
    for s in info.splits:
        if every_head or channels is None or s.channels == channels:
            heads[s.channels] = conn.fetch("head", s.channels, s.head_sha256)
            if channels is None and not every_head:
                break  # the smallest C is enough by default
    full = conn.fetch("full", 0, info.full_sha256) if need_full else Path()
    return Served(
        manifest, full, heads, {s.channels: list(s.bottleneck_shape) for s in info.splits}, info.device
    )


def camera_images(manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The test set as the device's camera would give it: uint8 ``[N, H, W, C]`` and labels."""
    from fedsim.config import ImageDataSpec
    from fedsim.edge.experiment import raw_uint8, spec_data

    spec = dict(manifest.get("data") or {})
    if not spec:
        raise UserError("the model's manifest names no dataset; export it again with this fedsim")
    seed = int(spec.pop("seed", 0))
    data = spec_data(ImageDataSpec.model_validate(spec), seed)
    return raw_uint8(data.x_test, data.mean, data.std), data.y_test.numpy()
