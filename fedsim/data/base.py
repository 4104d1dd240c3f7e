"""The in-memory dataset every loader returns, and helpers shared by the loaders."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fedsim.errors import UserError


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image dataset with a train and a test split, held in memory.

    Images are float32 ``[N, C, H, W]`` tensors normalised per channel with the train
    split's mean and standard deviation (``mean`` and ``std`` undo it). Loaders may
    return a cached object shared by many callers: treat the tensors as read-only.

    Attributes
    ----------
    name : str
        The registry name of the dataset (``"digits"``, ``"shapes"``...).
    x_train, x_test : torch.Tensor
        Normalised images, float32 ``[N, C, H, W]``.
    y_train, y_test : torch.Tensor
        Labels, int64 ``[N]``, in ``range(num_classes)``.
    num_classes : int
        Number of classes.
    class_names : tuple of str
        Name of each class, indexed by label.
    attributes_train, attributes_test : list of dict or None
        Per-image attributes (``shapes`` only), aligned with the images.
    mean, std : tuple of float
        Per-channel statistics used for the normalisation: ``raw = x * std + mean``,
        with raw pixel values in [0, 1].
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...]
    attributes_train: list[dict] | None = None
    attributes_test: list[dict] | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape ``(C, H, W)`` of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
            f"classes={self.num_classes}, input_shape={self.input_shape})"
        )


def make_dataset(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: tuple[str, ...],
    attributes_train: list[dict] | None = None,
    attributes_test: list[dict] | None = None,
) -> Dataset:
    """Normalise raw images with the train statistics and wrap them in a `Dataset`.

    Parameters
    ----------
    name : str
        Dataset name.
    x_train, x_test : np.ndarray
        Raw images ``[N, C, H, W]`` with values in [0, 1] (any float or integer dtype
        already scaled to [0, 1]).
    y_train, y_test : np.ndarray
        Integer labels ``[N]``.
    class_names : tuple of str
        Class names indexed by label.
    attributes_train, attributes_test : list of dict, optional
        Per-image attributes.

    Returns
    -------
    Dataset
        The normalised dataset.
    """
    x_train = np.asarray(x_train, dtype=np.float32)
    x_test = np.asarray(x_test, dtype=np.float32)
    mean = x_train.mean(axis=(0, 2, 3), dtype=np.float64)
    std = x_train.std(axis=(0, 2, 3), dtype=np.float64)
    std = np.where(std > 1e-6, std, 1.0)
    shape = (1, -1, 1, 1)
    m = mean.astype(np.float32).reshape(shape)
    s = std.astype(np.float32).reshape(shape)
    return Dataset(
        name=name,
        x_train=torch.from_numpy((x_train - m) / s),
        y_train=torch.from_numpy(np.asarray(y_train, dtype=np.int64)),
        x_test=torch.from_numpy((x_test - m) / s),
        y_test=torch.from_numpy(np.asarray(y_test, dtype=np.int64)),
        num_classes=len(class_names),
        class_names=tuple(class_names),
        attributes_train=attributes_train,
        attributes_test=attributes_test,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
    )


def stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and test, keeping class proportions.

    The test set has ``ceil(test_fraction * N)`` samples (scikit-learn's rule), shared
    out over classes in proportion to their sizes by largest remainder.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels ``[N]``.
    test_fraction : float
        Fraction of samples for the test split, in (0, 1).
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    (np.ndarray, np.ndarray)
        Sorted train and test indices; together they cover ``range(N)`` once.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    n_test = math.ceil(test_fraction * len(labels))
    share = counts * (n_test / len(labels))
    per_class = np.floor(share).astype(np.int64)
    left = n_test - int(per_class.sum())
    if left > 0:
        order = np.lexsort((rng.random(len(classes)), -(share - per_class)))
        per_class[order[:left]] += 1
    per_class = np.minimum(per_class, counts)
    train, test = [], []
    for c, k in zip(classes, per_class, strict=True):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def derive_rng(seed: int, *salt: int) -> np.random.Generator:
    """A generator for one use of the scenario seed, independent of other uses.

    Parameters
    ----------
    seed : int
        The scenario seed (non-negative).
    *salt : int
        Fixed integers naming the use (e.g. partitioning), so that streams differ.

    Returns
    -------
    np.random.Generator
        ``np.random.default_rng([seed, *salt])``.

    Raises
    ------
    UserError
        When ``seed`` is negative.
    """
    if seed < 0:
        raise UserError(f"seed is {seed}; expected a non-negative integer")
    return np.random.default_rng([seed, *salt])
