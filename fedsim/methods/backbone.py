"""The frozen backbone of prompt tuning: pretrained on a public split, cached by content.

No pretrained ViT can be downloaded: :func:`cached_backbone` trains the ViT on a public
split that no client sees (:func:`public_indices`) and caches its encoder under the
SHA-256 of everything that determines it (public images and labels, architecture,
recipe), so every process and every later run reuses the same file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fedsim.cache import cache_dir
from fedsim.data.base import derive_rng, stratified_split
from fedsim.models.base import SplitModel

SALT_PUBLIC = 0x9B1C
SALT_PRETRAIN = 0x9B1D


def public_indices(train_labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the public split: a stratified ``fraction`` of the training split.

    No client trains on them (clients drop them from their partition); the backbone is
    pretrained on them.
    """
    _, public = stratified_split(np.asarray(train_labels), fraction, derive_rng(seed, SALT_PUBLIC))
    return public


@dataclass(frozen=True)
class PretrainRecipe:
    """How the backbone is pretrained on the public split (Adam, full batch passes)."""

    epochs: int = 100
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 1e-4


def pretrain(model: SplitModel, x: torch.Tensor, y: torch.Tensor, recipe: PretrainRecipe, seed: int) -> float:
    """Train the whole model (encoder and a throw-away head) in place; last epoch's accuracy."""
    from fedsim.training import train_epochs

    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    stats = train_epochs(
        model, x, y, epochs=recipe.epochs, batch_size=recipe.batch_size, optimizer=opt, generator=gen
    )
    model.eval()
    return stats.accuracy


def content_key(x: torch.Tensor, y: torch.Tensor, description: Mapping[str, object]) -> str:
    """SHA-256 of the public images and labels and a JSON description (architecture, recipe)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x.numpy()).tobytes())
    h.update(np.ascontiguousarray(y.numpy()).tobytes())
    h.update(json.dumps(description, sort_keys=True, default=str).encode())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Backbone:
    """A frozen encoder's weights and where they came from."""

    state: dict[str, torch.Tensor]
    path: Path
    sha256: str
    pretrained_here: bool


def cached_backbone(
    build: Callable[[], SplitModel],
    x: torch.Tensor,
    y: torch.Tensor,
    description: Mapping[str, object],
    recipe: PretrainRecipe,
    seed: int,
) -> Backbone:
    """The encoder pretrained on (x, y), from ``cache_dir()/pfedpg/vit-<key>.pt`` or trained now.

    The key is :func:`content_key` of the data and of ``description`` plus the recipe and
    seed; the file is written atomically, so concurrent processes agree on it.
    """
    key = content_key(x, y, {**description, "recipe": asdict(recipe), "seed": seed})
    file = cache_dir() / "pfedpg" / f"vit-{key[:24]}.pt"
    trained = False
    if not file.exists():
        model = build()
        pretrain(model, x, y, recipe, derive_seed_int(seed))
        buf = io.BytesIO()
        torch.save({k: v.detach().clone() for k, v in model.features.state_dict().items()}, buf)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, file)
        trained = True
    return Backbone(torch.load(file, weights_only=True), file, file_sha256(file), trained)


def derive_seed_int(seed: int) -> int:
    """The pretraining's batch-order seed, derived from the scenario seed."""
    return int(np.random.SeedSequence([seed, SALT_PRETRAIN]).generate_state(1)[0])
