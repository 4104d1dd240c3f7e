"""The in-memory dataset every loader returns, and helpers shared by the loaders."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from fedsim.data.store import RowFile
from fedsim.errors import UserError

#: Channel statistics read at most about this many values at once (one pass over a
#: smaller set gives exactly numpy's mean and std of the whole array).
CHUNK_VALUES = 1 << 26

#: (start, stop) -> raw images ``[stop - start, C, H, W]`` of a split, read in order
ChunkReader = Callable[[int, int], np.ndarray]


def chunk_rows(shape: Sequence[int]) -> int:
    """How many images of ``shape`` ``[N, C, H, W]`` make one chunk of `CHUNK_VALUES`."""
    return max(1, CHUNK_VALUES // max(1, math.prod(shape[1:])))


def to_unit(raw: np.ndarray, divisor: float) -> np.ndarray:
    """Raw pixels as float32 in [0, 1]: ``raw / divisor`` (float32 raw with divisor 1 as is)."""
    if divisor == 1 and raw.dtype == np.float32:
        return raw
    return raw / np.float32(divisor)


@dataclass(frozen=True, eq=False)
class Images:
    """A split's images, kept as they were made and normalised when read.

    ``raw`` is an array in memory, or a :class:`~fedsim.data.store.RowFile` of a cached
    file: then reading a few clients' rows reads only those rows, and processes on one
    machine share the operating system's cached copy of the file.

    Attributes
    ----------
    raw : np.ndarray or RowFile
        ``[N, C, H, W]`` in the dtype the images were made in (uint8 from files, float32
        when generated); ``raw / divisor`` is in [0, 1].
    divisor : float
        255 for 8-bit pixels, 1 for pixels already in [0, 1].
    mean, std : np.ndarray
        float32 ``[1, C, 1, 1]``: the normalisation, ``(raw / divisor - mean) / std``.
    """

    raw: np.ndarray | RowFile
    divisor: float
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def normalised(cls, x: torch.Tensor) -> Images:
        """Images that are already normalised (``x`` is read back bit for bit)."""
        c = x.shape[1]
        one, zero = np.ones((1, c, 1, 1), np.float32), np.zeros((1, c, 1, 1), np.float32)
        return cls(x.detach().contiguous().numpy(), 1.0, zero, one)

    def __len__(self) -> int:
        return len(self.raw)

    def rows(self, index: np.ndarray | slice) -> torch.Tensor:
        """Normalised float32 images of the rows ``index`` (an index array or a slice)."""
        raw = self.raw[index]
        return torch.from_numpy(np.ascontiguousarray((to_unit(raw, self.divisor) - self.mean) / self.std))

    @cached_property
    def all(self) -> torch.Tensor:
        """Every image normalised, float32 ``[N, C, H, W]`` (built once, then kept)."""
        return self.rows(slice(None))


class Attributes(Sequence[dict]):
    """Per-image attributes kept as small integer columns; each item is built as a dict on
    demand (a million images cost their columns, not a million dicts).

    ``columns`` maps a column name to ``[N]`` integer codes; ``vocab`` maps an output key
    to ``(column, names)``: item ``i``'s value for the key is ``names[columns[column][i]]``.
    """

    def __init__(self, columns: dict[str, np.ndarray], vocab: dict[str, tuple[str, tuple[str, ...]]]) -> None:
        self.columns = columns
        self.vocab = vocab

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i):  # int -> dict, slice -> list of dicts
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return {key: names[int(self.columns[col][i])] for key, (col, names) in self.vocab.items()}

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking sequence, as list


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image dataset with a train and a test split.

    Images are kept compactly (:class:`Images`) and read normalised per channel with the
    train split's mean and standard deviation (``mean`` and ``std`` undo it). Loaders may
    return a cached object shared by many callers: treat everything as read-only.

    Attributes
    ----------
    name : str
        The registry name of the dataset (``"digits"``, ``"shapes"``...).
    train, test : Images
        The images of each split; ``train.rows(idx)`` reads a few, ``x_train`` all.
    y_train, y_test : torch.Tensor
        Labels, int64 ``[N]``, in ``range(num_classes)``.
    num_classes : int
        Number of classes.
    class_names : tuple of str
        Name of each class, indexed by label.
    attributes_train, attributes_test : Sequence of dict or None
        Per-image attributes (``shapes`` only), aligned with the images.
    mean, std : tuple of float
        Per-channel statistics used for the normalisation: ``raw = x * std + mean``,
        with raw pixel values in [0, 1].
    """

    name: str
    train: Images
    test: Images
    y_train: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...]
    attributes_train: Sequence[dict] | None = None
    attributes_test: Sequence[dict] | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def x_train(self) -> torch.Tensor:
        """Every training image, normalised, float32 ``[N, C, H, W]`` (kept once built)."""
        return self.train.all

    @property
    def x_test(self) -> torch.Tensor:
        """Every test image, normalised, float32 ``[N, C, H, W]`` (kept once built)."""
        return self.test.all

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape ``(C, H, W)`` of one image."""
        c, h, w = self.train.raw.shape[1:]
        return int(c), int(h), int(w)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
            f"classes={self.num_classes}, input_shape={self.input_shape})"
        )


def channel_stats(read: ChunkReader, shape: Sequence[int], divisor: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation (float64) of ``raw / divisor``, read in chunks.

    Two passes (the mean, then the squared deviations from it), each over chunks of
    `chunk_rows` images; with one chunk this is exactly ``x.mean`` and ``x.std`` over
    axes (0, 2, 3) in float64.
    """
    n, step, axes = int(shape[0]), chunk_rows(shape), (0, 2, 3)
    count = n * int(shape[2]) * int(shape[3])
    spans = [(a, min(a + step, n)) for a in range(0, n, step)]
    total = sum(np.add.reduce(to_unit(read(a, b), divisor), axis=axes, dtype=np.float64) for a, b in spans)
    mean = np.true_divide(total, count)
    centre = mean.reshape(1, -1, 1, 1)
    squares = 0.0
    for a, b in spans:
        dev = to_unit(read(a, b), divisor) - centre
        squares = squares + np.add.reduce(np.multiply(dev, dev, out=dev), axis=axes, dtype=np.float64)
    return mean, np.sqrt(np.true_divide(squares, count))


def dataset_from_raw(
    name: str,
    raw: tuple[np.ndarray | RowFile, np.ndarray | RowFile],
    labels: tuple[np.ndarray, np.ndarray],
    class_names: tuple[str, ...],
    stats: tuple[np.ndarray, np.ndarray],
    divisor: float = 1.0,
    attributes: tuple[Sequence[dict], Sequence[dict]] | None = None,
) -> Dataset:
    """A `Dataset` over raw train and test images whose channel statistics are known.

    ``stats``: the train split's per-channel mean and std of ``raw / divisor`` (float64, as
    `channel_stats` gives them); a std below 1e-6 is taken as 1.
    """
    mean, std = (np.asarray(s, dtype=np.float64) for s in stats)
    std = np.where(std > 1e-6, std, 1.0)
    m = mean.astype(np.float32).reshape(1, -1, 1, 1)
    s = std.astype(np.float32).reshape(1, -1, 1, 1)
    attrs = attributes or (None, None)
    return Dataset(
        name=name,
        train=Images(raw[0], divisor, m, s),
        test=Images(raw[1], divisor, m, s),
        y_train=torch.from_numpy(np.array(labels[0], dtype=np.int64)),
        y_test=torch.from_numpy(np.array(labels[1], dtype=np.int64)),
        num_classes=len(class_names),
        class_names=tuple(class_names),
        attributes_train=attrs[0],
        attributes_test=attrs[1],
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
    )


def make_dataset(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: tuple[str, ...],
    attributes_train: Sequence[dict] | None = None,
    attributes_test: Sequence[dict] | None = None,
    divisor: float = 1.0,
) -> Dataset:
    """Wrap raw images in a `Dataset` normalised with the train statistics.

    Parameters
    ----------
    name : str
        Dataset name.
    x_train, x_test : np.ndarray
        Raw images ``[N, C, H, W]``, kept in their dtype; ``x / divisor`` is in [0, 1]
        (float images in [0, 1] with divisor 1, 8-bit images with divisor 255).
    y_train, y_test : np.ndarray
        Integer labels ``[N]``.
    class_names : tuple of str
        Class names indexed by label.
    attributes_train, attributes_test : Sequence of dict, optional
        Per-image attributes.
    divisor : float
        What the raw values are divided by to lie in [0, 1].

    Returns
    -------
    Dataset
        The dataset.
    """
    if x_train.dtype.kind == "f" and x_train.dtype != np.float32:
        x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
    stats = channel_stats(lambda a, b: x_train[a:b], x_train.shape, divisor)
    attrs = None if attributes_train is None else (attributes_train, attributes_test or [])
    return dataset_from_raw(name, (x_train, x_test), (y_train, y_test), class_names, stats, divisor, attrs)


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
