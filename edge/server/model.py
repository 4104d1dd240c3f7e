"""The models a tail server holds: every split's tail and head file, and the whole model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.edge.onnx_export import MANIFEST_FILE, export_run, ort_session
from fedsim.errors import UserError


def resolve_model_dir(path: Path) -> Path:
    """The ONNX folder of ``path``: itself with ``manifest.json``, else ``RUN/onnx`` (exported if needed)."""
    if (path / MANIFEST_FILE).is_file():
        return path
    if not path.is_dir():
        raise UserError(
            f"{path}: no such folder; expected an ONNX folder (fedsim edge export) or an edge run"
        )
    if (path / "onnx" / MANIFEST_FILE).is_file():
        return path / "onnx"
    if (path / "experiment.yaml").is_file():
        export_run(path, path / "onnx")
        return path / "onnx"
    raise UserError(
        f"{path}: neither manifest.json nor an edge run (experiment.yaml); run fedsim edge export"
    )


@dataclass
class ModelFile:
    """An ONNX file the server can hand to a device."""

    path: Path
    sha256: str
    nbytes: int

    @classmethod
    def of(cls, path: Path) -> ModelFile:
        data = path.read_bytes()
        return cls(path, hashlib.sha256(data).hexdigest(), len(data))


class ServedModel:
    """The exported split models: tails by bottleneck width, and the whole model."""

    def __init__(self, folder: Path, threads: int = 1) -> None:
        self.folder = folder
        self.manifest: dict[str, Any] = json.loads((folder / MANIFEST_FILE).read_text())
        if "full" not in self.manifest:
            raise UserError(
                f"{folder}: manifest has no whole model (exported by an older fedsim); export again"
            )
        self.input_shape = tuple(self.manifest["input_shape"])
        self.mean = tuple(self.manifest["mean"])
        self.std = tuple(self.manifest["std"])
        self.tails: dict[int, Any] = {}
        self.heads: dict[int, ModelFile] = {}
        self.bottlenecks: dict[int, tuple[int, ...]] = {}
        for m in self.manifest["models"]:
            c = int(m["C"])
            self.tails[c] = ort_session(folder / m["tail"], threads)
            self.heads[c] = ModelFile.of(folder / m["head"])
            self.bottlenecks[c] = tuple(m["bottleneck_shape"])
        self.full_file = ModelFile.of(folder / self.manifest["full"]["file"])
        self.full = ort_session(self.full_file.path, threads)

    def run_tail(self, z: np.ndarray) -> np.ndarray:
        """Logits of the tail whose input has ``z.shape[1]`` channels."""
        session = self.tails[z.shape[1]]
        return session.run(None, {session.get_inputs()[0].name: z})[0]

    def run_full(self, x: np.ndarray) -> np.ndarray:
        """Logits of the whole model on a normalised batch."""
        return self.full.run(None, {self.full.get_inputs()[0].name: x})[0]
