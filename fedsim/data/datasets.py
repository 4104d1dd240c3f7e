"""The dataset registry and the cached loader that scenarios go through.

Each entry's object is a loader ``(options, seed) -> Dataset`` where ``options`` is an
instance of the entry's pydantic parameter model. Nothing here downloads anything:
``digits`` ships with scikit-learn, ``shapes`` is generated, and ``cifar10``,
``cifar100`` and ``imagefolder`` read what the user has on disk.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from fedsim.config import Params
from fedsim.data.base import (
    Dataset,
    channel_stats,
    dataset_from_raw,
    derive_rng,
    make_dataset,
    stratified_split,
)
from fedsim.data.cifar import read_cifar10, read_cifar100
from fedsim.data.imagefolder import read_imagefolder
from fedsim.data.shapes import (
    SHAPES,
    attributes_from_columns,
    attributes_of,
    draw_attributes,
    generate_shapes,
    shape_chunks,
)
from fedsim.data.store import RowFile, read_meta, row_reader, stored, write_meta, write_rows
from fedsim.memo import Memo, memo
from fedsim.registry import Registry

Loader = Callable[[Any, int], Dataset]
DATASETS: Registry[Loader] = Registry("dataset")

# Fixed salts: each use of the seed draws from its own stream.
_SALT_SPLIT = 0x5B17
_SALT_SHAPES_TRAIN = 0x5A01
_SALT_SHAPES_TEST = 0x5A02


class DigitsParams(Params):
    """Options of ``digits``."""

    test_fraction: float = Field(0.2, gt=0, lt=1, description="share of samples for test")


class ShapesParams(Params):
    """Options of ``shapes``."""

    image_size: int = Field(32, ge=16, le=256, description="image side in pixels")
    num_train: int = Field(2000, ge=10, le=1_000_000, description="training images")
    num_test: int = Field(500, ge=10, le=1_000_000, description="test images")


class CifarParams(Params):
    """Options of ``cifar10`` and ``cifar100``."""

    path: Path = Field(description="the extracted python-version folder")


class ImageFolderParams(Params):
    """Options of ``imagefolder``."""

    path: Path = Field(description="root of the class folders")
    image_size: int = Field(32, ge=8, le=512, description="images are resized to this side")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="test share when there is no train/test split")


@DATASETS.register("digits", DigitsParams, "scikit-learn's 8x8 handwritten digits (1,797)")
def load_digits(options: DigitsParams, seed: int) -> Dataset:
    """Load scikit-learn's bundled digits, split stratified from ``seed``."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    y = bunch.target.astype(np.int64)
    tr, te = stratified_split(y, options.test_fraction, derive_rng(seed, _SALT_SPLIT))
    names = tuple(str(c) for c in bunch.target_names)
    return make_dataset("digits", x[tr], y[tr], x[te], y[te], names)


@DATASETS.register("shapes", ShapesParams, "procedural RGB shapes, 10 classes, any size")
def load_shapes(options: ShapesParams, seed: int) -> Dataset:
    """Generate the ``shapes`` dataset, a deterministic function of options and seed.

    Generated once into fedsim's cache folder (rasterised in parallel when large) and
    memory-mapped from there; kept in memory where the cache folder cannot be written.
    """
    key = {"options": options.model_dump(mode="json"), "seed": seed}
    folder = stored("shapes", key, lambda tmp: _write_shapes(tmp, options, seed))
    if folder is None:
        x_tr, y_tr, a_tr = generate_shapes(options.num_train, options.image_size, _shapes_rng(seed, "train"))
        x_te, y_te, a_te = generate_shapes(options.num_test, options.image_size, _shapes_rng(seed, "test"))
        return make_dataset("shapes", x_tr, y_tr, x_te, y_te, SHAPES, a_tr, a_te)
    raw = tuple(RowFile(folder / f"x_{s}.npy") for s in _SPLITS)
    labels = tuple(np.load(folder / f"y_{s}.npy") for s in _SPLITS)
    attrs = tuple(attributes_from_columns(np.load(folder / f"attributes_{s}.npz")) for s in _SPLITS)
    meta = read_meta(folder)
    return dataset_from_raw("shapes", raw, labels, SHAPES, (meta["mean"], meta["std"]), 1.0, attrs)  # type: ignore[arg-type]  # 2-tuples by construction


_SPLITS = ("train", "test")


def _shapes_rng(seed: int, split: str) -> np.random.Generator:
    return derive_rng(seed, _SALT_SHAPES_TRAIN if split == "train" else _SALT_SHAPES_TEST)


def _write_shapes(folder: Path, options: ShapesParams, seed: int) -> None:
    """Write both splits of ``shapes`` into ``folder`` chunk by chunk, then their statistics."""
    size = options.image_size
    sizes = {"train": options.num_train, "test": options.num_test}
    for split in _SPLITS:
        rng = _shapes_rng(seed, split)
        a = draw_attributes(sizes[split], size, rng)
        shape = (sizes[split], 3, size, size)
        write_rows(folder / f"x_{split}.npy", shape, np.dtype(np.float32), shape_chunks(a, size, rng))
        np.save(folder / f"y_{split}.npy", a["label"].astype(np.int64))
        columns = attributes_of(a).columns
        np.savez(folder / f"attributes_{split}.npz", **columns)  # type: ignore[arg-type]  # arrays by name
    train_shape = (sizes["train"], 3, size, size)
    mean, std = channel_stats(row_reader(folder / "x_train.npy"), train_shape, 1.0)
    write_meta(folder, {"mean": mean.tolist(), "std": std.tolist()})


def _from_uint8(name: str, parts: tuple) -> Dataset:
    x_tr, y_tr, x_te, y_te, names = parts
    return make_dataset(name, x_tr, y_tr, x_te, y_te, names, divisor=255.0)


@DATASETS.register("cifar10", CifarParams, "CIFAR-10 python batches from a local folder")
def load_cifar10(options: CifarParams, seed: int) -> Dataset:
    """Load CIFAR-10 from ``options.path`` (``seed`` is unused: the split is fixed)."""
    return _from_uint8("cifar10", read_cifar10(options.path))


@DATASETS.register("cifar100", CifarParams, "CIFAR-100 python files (fine labels), local")
def load_cifar100(options: CifarParams, seed: int) -> Dataset:
    """Load CIFAR-100 with fine labels from ``options.path`` (``seed`` is unused)."""
    return _from_uint8("cifar100", read_cifar100(options.path))


@DATASETS.register("imagefolder", ImageFolderParams, "images in class folders on disk")
def load_imagefolder(options: ImageFolderParams, seed: int) -> Dataset:
    """Load an image-folder tree; without train/test folders the split comes from ``seed``."""
    parts = read_imagefolder(
        options.path, options.image_size, options.test_fraction, derive_rng(seed, _SALT_SPLIT)
    )
    return _from_uint8("imagefolder", parts)


_lock = threading.Lock()
_DATASETS: Memo[Dataset] = memo("data.dataset", 8)  # key: (name, options JSON, seed)
_SEED_FREE = {"cifar10", "cifar100"}  # fixed splits: one cached copy for every seed


def _load(name: str, options_json: str, seed: int) -> Dataset:
    entry = DATASETS.entry(name)
    return entry.obj(entry.params.model_validate_json(options_json), seed)


def load_dataset(name: str, options: Mapping[str, Any] | BaseModel, seed: int) -> Dataset:
    """Load dataset ``name`` with ``options``, cached in-process.

    Parameters
    ----------
    name : str
        A registered dataset name.
    options : Mapping or BaseModel
        Options, validated against the entry's parameter model (defaults filled in, so
        ``{}`` and the explicit defaults share a cache slot).
    seed : int
        Seed for splits and generation (non-negative).

    Returns
    -------
    Dataset
        The dataset. Cached objects are shared: do not modify their tensors.

    Raises
    ------
    UserError
        For an unknown name or unreadable data.
    pydantic.ValidationError
        For invalid options.
    """
    params_model = DATASETS.entry(name).params
    if isinstance(options, BaseModel):
        options = options.model_dump()
    params = params_model.model_validate(dict(options))
    key = json.dumps(params.model_dump(mode="json"), sort_keys=True)
    seed = 0 if name in _SEED_FREE else int(seed)
    with _lock:
        return _DATASETS.get((name, key, seed), lambda: _load(name, key, seed))


def clear_dataset_cache() -> None:
    """Forget every cached dataset (frees memory; the next load reads again)."""
    _DATASETS.clear()
