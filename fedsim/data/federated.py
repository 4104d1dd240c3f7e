"""A dataset split over clients: what a scenario's data section resolves to."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsim.data.base import Dataset, derive_rng
from fedsim.data.datasets import DATASETS, load_dataset
from fedsim.data.partition import PARTITIONERS, local_test_indices, long_tail_indices
from fedsim.data.store import stored, write_meta
from fedsim.errors import UserError
from fedsim.memo import Memo, memo

# Fixed salts: each step draws from its own stream of the scenario seed.
SALT_LONG_TAIL = 0x17A1
SALT_PARTITION = 0x9A27
SALT_LOCAL_TEST = 0x7E57


class Ragged(Sequence[np.ndarray]):
    """K read-only int64 index arrays kept as one flat array and K + 1 offsets.

    Item ``k`` is a view ``flat[offsets[k]:offsets[k + 1]]``: a hundred thousand clients
    cost two arrays, not a hundred thousand objects.
    """

    def __init__(self, flat: np.ndarray, offsets: np.ndarray) -> None:
        self.flat, self.offsets = _frozen(flat), _frozen(offsets)

    @classmethod
    def of(cls, parts: Sequence[np.ndarray]) -> Ragged:
        """The ragged array of ``parts``."""
        sizes = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
        flat = np.concatenate(parts) if len(parts) else np.zeros(0, np.int64)
        return cls(flat, np.concatenate([[0], np.cumsum(sizes)]))

    def sizes(self) -> np.ndarray:
        """int64 ``[K]``: the length of each item."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, k):  # int -> array, slice -> list of arrays
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if not -len(self) <= k < len(self):
            raise IndexError(f"index {k} out of range for {len(self)} items")
        k = k % len(self)
        return self.flat[self.offsets[k] : self.offsets[k + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[k] for k in range(len(self)))


@dataclass(frozen=True, eq=False)
class FederatedData:
    """A dataset and its split over K clients.

    Index arrays are read-only; builders cache and share this object.

    Attributes
    ----------
    dataset : Dataset
        The full dataset (the long tail, if any, is a subset of its train split).
    train_indices : Ragged
        Per client, sorted indices into the train split; disjoint.
    test_indices : Ragged
        Per client, sorted indices into the test split (the local test set, which
        mirrors the client's training distribution; clients may share samples).
    train_class_counts : np.ndarray
        int64 ``[K, C]``: training samples of each class held by each client.
    """

    dataset: Dataset
    train_indices: Ragged
    test_indices: Ragged
    train_class_counts: np.ndarray

    @property
    def num_clients(self) -> int:
        """Number of clients K."""
        return len(self.train_indices)

    @property
    def class_counts(self) -> np.ndarray:
        """int64 ``[C]``: training samples per class over all clients."""
        return self.train_class_counts.sum(axis=0)

    def client_train(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of client ``k``'s training set (normalised; only its rows are read)."""
        idx = np.asarray(self.train_indices[k])
        return self.dataset.train.rows(idx), self.dataset.y_train[torch.from_numpy(idx.copy())]

    def client_test(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of client ``k``'s local test set."""
        idx = np.asarray(self.test_indices[k])
        return self.dataset.test.rows(idx), self.dataset.y_test[torch.from_numpy(idx.copy())]


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.int64) if a.flags.writeable else a
    a.flags.writeable = False
    return a


_lock = threading.Lock()
#: key: (dataset, options JSON, partitioner, its parameters JSON, clients, seed, imbalance factor)
_FEDERATED: Memo[FederatedData] = memo("data.federated", 8)


def build_federated(
    dataset: str,
    dataset_options: Mapping[str, Any],
    partition: str,
    partition_params: Mapping[str, Any],
    num_clients: int,
    seed: int,
    imbalance_factor: float | None = None,
) -> FederatedData:
    """Load a dataset, optionally make it long-tailed, and split it over clients.

    Steps: load (cached); if ``imbalance_factor`` is given, subsample the train split
    with `long_tail_indices`; partition the remaining samples; give each client a local
    test set with `local_test_indices`. Each random step uses its own generator
    ``np.random.default_rng([seed, salt])``, so the result is a deterministic function of
    the arguments, and it is cached in-process.

    Parameters
    ----------
    dataset : str
        A registered dataset name.
    dataset_options : Mapping
        Options for the dataset.
    partition : str
        A registered partitioner name.
    partition_params : Mapping
        Parameters for the partitioner.
    num_clients : int
        Number of clients K.
    seed : int
        Scenario seed (non-negative).
    imbalance_factor : float, optional
        IF of the long-tail profile; None keeps the train split as it is.

    Returns
    -------
    FederatedData
        The split; shared between callers with the same arguments.

    Raises
    ------
    UserError
        For unknown names, unreadable data, more clients than training samples, or a
        partition that cannot be drawn.
    pydantic.ValidationError
        For invalid options or parameters.
    """
    options = DATASETS.params_of(dataset, dict(dataset_options)).model_dump(mode="json")
    params = PARTITIONERS.params_of(partition, dict(partition_params))
    with _lock:
        key = (
            dataset,
            json.dumps(options, sort_keys=True),
            partition,
            params.model_dump_json(),
            int(num_clients),
            int(seed),
            None if imbalance_factor is None else float(imbalance_factor),
        )
        return _FEDERATED.get(key, lambda: _build(*key))


def _build(
    dataset: str,
    options_json: str,
    partition: str,
    params_json: str,
    num_clients: int,
    seed: int,
    imbalance_factor: float | None,
) -> FederatedData:
    """The split, computed once per machine and stored (every worker maps the same files)."""
    data = load_dataset(dataset, json.loads(options_json), seed)
    labels = hashlib.sha256(data.y_train.numpy().tobytes() + data.y_test.numpy().tobytes()).hexdigest()
    key = {
        "dataset": dataset,
        "options": options_json,
        "labels": labels,
        "partition": partition,
        "params": params_json,
        "clients": num_clients,
        "seed": seed,
        "imbalance_factor": imbalance_factor,
    }
    args = (data, partition, params_json, num_clients, seed, imbalance_factor)
    folder = stored("split", key, lambda tmp: _write_split(tmp, *_split(*args)))
    if folder is None:
        return FederatedData(data, *_split(*args))
    train, test = (
        Ragged(np.load(folder / f"{s}_flat.npy"), np.load(folder / f"{s}_offsets.npy")) for s in _SETS
    )
    return FederatedData(data, train, test, _frozen(np.load(folder / "counts.npy")))


_SETS = ("train", "test")


def _read_ragged(folder: Path, name: str) -> Ragged:
    return Ragged(np.load(folder / f"{name}_flat.npy"), np.load(folder / f"{name}_offsets.npy"))


def _write_split(folder: Path, train: Ragged, test: Ragged, counts: np.ndarray) -> None:
    for name, ragged in zip(_SETS, (train, test), strict=True):
        np.save(folder / f"{name}_flat.npy", ragged.flat)
        np.save(folder / f"{name}_offsets.npy", ragged.offsets)
    np.save(folder / "counts.npy", counts)
    write_meta(folder, {"clients": len(train)})


def _split(
    data: Dataset,
    partition: str,
    params_json: str,
    num_clients: int,
    seed: int,
    imbalance_factor: float | None,
) -> tuple[Ragged, Ragged, np.ndarray]:
    """Long tail, partition and local test sets: (train indices, test indices, class counts)."""
    y_train = data.y_train.numpy()
    pool = np.arange(len(y_train))
    if imbalance_factor is not None:
        pool = long_tail_indices(
            y_train, data.num_classes, imbalance_factor, derive_rng(seed, SALT_LONG_TAIL)
        )
    if num_clients > len(pool):
        after = " after the long-tail subsampling" if imbalance_factor is not None else ""
        raise UserError(
            f"clients.num is {num_clients} but the dataset has {len(pool)} training "
            f"samples{after}; expected at most {len(pool)}"
        )
    entry = PARTITIONERS.entry(partition)
    params = entry.params.model_validate_json(params_json)
    labels = y_train[pool]
    local = entry.obj(labels, num_clients, params, derive_rng(seed, SALT_PARTITION))
    test = local_test_indices(
        [labels[idx] for idx in local],
        len(pool),
        data.y_test.numpy(),
        data.num_classes,
        derive_rng(seed, SALT_LOCAL_TEST),
    )
    sizes = np.fromiter((len(idx) for idx in local), dtype=np.int64, count=len(local))
    owner = np.repeat(np.arange(num_clients), sizes)
    flat_labels = labels[np.concatenate(local)] if len(local) else np.zeros(0, np.int64)
    counts = np.bincount(owner * data.num_classes + flat_labels, minlength=num_clients * data.num_classes)
    train = Ragged.of([pool[idx] for idx in local])
    return train, Ragged.of(test), counts.reshape(num_clients, data.num_classes).astype(np.int64)


def clear_federated_cache() -> None:
    """Forget every cached `FederatedData`."""
    _FEDERATED.clear()
