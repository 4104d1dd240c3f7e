"""Images in class folders on disk (the ImageFolder layout), read with Pillow.

Two layouts are accepted: ``root/train/<class>/*`` with ``root/test/<class>/*``, or
``root/<class>/*`` which is split into train and test, stratified, from the seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fedsim.data.base import stratified_split
from fedsim.errors import UserError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
LAYOUT = (
    "expected root/train/<class>/*.png|jpg|jpeg|bmp with root/test/<class>/..., "
    "or root/<class>/*.png|jpg|jpeg|bmp"
)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith(".")
    )


def _scan(folder: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """Image files under ``folder/<class>/`` and their labels (absent classes allowed)."""
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        sub = folder / name
        found = _image_files(sub) if sub.is_dir() else []
        files += found
        labels += [label] * len(found)
    return files, np.asarray(labels, dtype=np.int64)


def _load(files: list[Path], image_size: int) -> np.ndarray:
    """Read ``files`` as RGB, resize to ``image_size``; uint8 ``[N, 3, S, S]``."""
    out = np.empty((len(files), 3, image_size, image_size), dtype=np.uint8)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as im:
                rgb = im.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
        except Exception as exc:  # Pillow raises several types for bad files
            raise UserError(
                f"imagefolder: cannot read image {file} ({type(exc).__name__}); "
                "expected a PNG, JPEG or BMP file"
            ) from None
        out[i] = np.asarray(rgb).transpose(2, 0, 1)
    return out


def read_imagefolder(
    path: Path, image_size: int, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read an image-folder tree.

    Parameters
    ----------
    path : Path
        The root folder.
    image_size : int
        Images are resized to ``image_size x image_size``.
    test_fraction : float
        Test share when the tree has no ``train``/``test`` split.
    rng : np.random.Generator
        Used for the stratified split of a tree without ``train``/``test``.

    Returns
    -------
    x_train, y_train, x_test, y_test : np.ndarray
        uint8 images ``[N, 3, S, S]`` and int64 labels.
    class_names : tuple of str
        Sorted class folder names.

    Raises
    ------
    UserError
        When the root is missing, there are no class folders, a class has no images, or
        an image cannot be read (the message names the file).
    """
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"imagefolder: {root} does not exist or is not a folder; {LAYOUT}")
    split = (root / "train").is_dir() and (root / "test").is_dir()
    base = root / "train" if split else root
    classes = [p.name for p in _class_dirs(base)]
    if not classes:
        raise UserError(f"imagefolder: {base} has no class folders; {LAYOUT}")
    files, labels = _scan(base, classes)
    per_class = np.bincount(labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, per_class, strict=True) if n == 0]
    if empty:
        raise UserError(f"imagefolder: class folder {base / empty[0]} has no images; {LAYOUT}")
    if split:
        extra = sorted({p.name for p in _class_dirs(root / "test")} - set(classes))
        if extra:
            raise UserError(
                f"imagefolder: {root / 'test' / extra[0]} is a class not in {base}; "
                "expected test classes to be a subset of the train classes"
            )
        test_files, y_test = _scan(root / "test", classes)
        if not test_files:
            raise UserError(f"imagefolder: {root / 'test'} has no images; {LAYOUT}")
        train_files, y_train = files, labels
    else:
        tr, te = stratified_split(labels, test_fraction, rng)
        if len(tr) == 0:
            raise UserError(f"imagefolder: {root} has too few images to split; expected at least 2")
        train_files, y_train = [files[i] for i in tr], labels[tr]
        test_files, y_test = [files[i] for i in te], labels[te]
    x_train = _load(train_files, image_size)
    x_test = _load(test_files, image_size)
    return x_train, y_train, x_test, y_test, tuple(classes)
