"""CIFAR-10 and CIFAR-100 from the "python version" pickled batches on disk.

Nothing is downloaded: the user points ``path`` at the extracted folder. The pickles are
read with an unpickler that only admits the numpy globals needed to rebuild arrays, so a
tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.errors import UserError

CIFAR10_LAYOUT = (
    "expected the 'cifar-10-batches-py' folder from the CIFAR-10 python version "
    "(data_batch_1..5, test_batch, batches.meta)"
)
CIFAR100_LAYOUT = (
    "expected the 'cifar-100-python' folder from the CIFAR-100 python version "
    "(train, test, meta with fine_labels)"
)

_ALLOWED = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds plain containers and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        module = module.replace("numpy.core", "numpy._core", 1)
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        return super().find_class(module, name)


def _read_pickle(file: Path, who: str, layout: str) -> dict:
    if not file.is_file():
        raise UserError(f"{who}: {file.parent} has no {file.name}; {layout}")
    try:
        with file.open("rb") as fh:
            obj = _SafeUnpickler(fh, encoding="bytes").load()
    except Exception as exc:  # any failure to unpickle is a malformed file
        raise UserError(
            f"{who}: {file} is not a readable CIFAR pickle ({type(exc).__name__}); {layout}"
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f"{who}: {file} does not hold a dict; {layout}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(d: dict, key: str, file: Path, who: str, layout: str) -> Any:
    if key not in d:
        raise UserError(f"{who}: {file} has no {key!r} entry; {layout}")
    return d[key]


def _images_labels(file: Path, label_key: str, who: str, layout: str) -> tuple[np.ndarray, np.ndarray]:
    d = _read_pickle(file, who, layout)
    try:
        data = np.asarray(_field(d, "data", file, who, layout), dtype=np.uint8)
        labels = np.asarray(_field(d, label_key, file, who, layout), dtype=np.int64)
        images = data.reshape(len(data), 3, 32, 32)
    except (ValueError, TypeError):
        raise UserError(f"{who}: {file} has data that is not N x 3072 uint8 images; {layout}") from None
    if labels.shape != (len(images),):
        raise UserError(f"{who}: {file} has {len(labels)} labels for {len(images)} images")
    return images, labels


def _names(file: Path, key: str, who: str, layout: str) -> tuple[str, ...]:
    raw = _field(_read_pickle(file, who, layout), key, file, who, layout)
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in raw)


def _check_dir(path: Path, who: str, layout: str) -> None:
    if not path.is_dir():
        raise UserError(f"{who}: {path} does not exist or is not a folder; {layout}")


def _check_labels(labels: np.ndarray, n: int, who: str, path: Path) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= n):
        raise UserError(f"{who}: {path} has labels outside 0..{n - 1}")


def read_cifar10(
    path: Path,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read the CIFAR-10 python batches in ``path``.

    Parameters
    ----------
    path : Path
        The ``cifar-10-batches-py`` folder.

    Returns
    -------
    x_train, y_train, x_test, y_test : np.ndarray
        uint8 images ``[N, 3, 32, 32]`` and int64 labels.
    class_names : tuple of str
        The ten label names from ``batches.meta``.

    Raises
    ------
    UserError
        When the folder, a file or a field is missing or malformed.
    """
    who, layout = "cifar10", CIFAR10_LAYOUT
    path = Path(path)
    _check_dir(path, who, layout)
    names = _names(path / "batches.meta", "label_names", who, layout)
    parts = [_images_labels(path / f"data_batch_{i}", "labels", who, layout) for i in range(1, 6)]
    x_test, y_test = _images_labels(path / "test_batch", "labels", who, layout)
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    _check_labels(np.concatenate([y_train, y_test]), len(names), who, path)
    return x_train, y_train, x_test, y_test, names


def read_cifar100(
    path: Path,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read the CIFAR-100 python files in ``path`` (fine labels).

    Parameters
    ----------
    path : Path
        The ``cifar-100-python`` folder.

    Returns
    -------
    x_train, y_train, x_test, y_test : np.ndarray
        uint8 images ``[N, 3, 32, 32]`` and int64 fine labels.
    class_names : tuple of str
        The 100 fine label names from ``meta``.

    Raises
    ------
    UserError
        When the folder, a file or a field is missing or malformed.
    """
    who, layout = "cifar100", CIFAR100_LAYOUT
    path = Path(path)
    _check_dir(path, who, layout)
    names = _names(path / "meta", "fine_label_names", who, layout)
    x_train, y_train = _images_labels(path / "train", "fine_labels", who, layout)
    x_test, y_test = _images_labels(path / "test", "fine_labels", who, layout)
    _check_labels(np.concatenate([y_train, y_test]), len(names), who, path)
    return x_train, y_train, x_test, y_test, names
