"""A dataset split over clients: what a scenario's data section resolves to."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedsim.data.base import Dataset, derive_rng
from fedsim.data.datasets import DATASETS, load_dataset
from fedsim.data.partition import PARTITIONERS, local_test_indices, long_tail_indices
from fedsim.errors import UserError
from fedsim.memo import Memo, memo

# Fixed salts: each step draws from its own stream of the scenario seed.
SALT_LONG_TAIL = 0x17A1
SALT_PARTITION = 0x9A27
SALT_LOCAL_TEST = 0x7E57


@dataclass(frozen=True, eq=False)
class FederatedData:
    """A dataset and its split over K clients.

    Index arrays are read-only numpy arrays; builders cache and share this object.

    Attributes
    ----------
    dataset : Dataset
        The full dataset (the long tail, if any, is a subset of its train split).
    train_indices : list of np.ndarray
        Per client, sorted indices into ``dataset.x_train``; disjoint.
    test_indices : list of np.ndarray
        Per client, sorted indices into ``dataset.x_test`` (the local test set, which
        mirrors the client's training distribution; clients may share samples).
    train_class_counts : np.ndarray
        int64 ``[K, C]``: training samples of each class held by each client.
    """

    dataset: Dataset
    train_indices: list[np.ndarray]
    test_indices: list[np.ndarray]
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
        """Images and labels of client ``k``'s training set."""
        idx = torch.from_numpy(self.train_indices[k].copy())
        return self.dataset.x_train[idx], self.dataset.y_train[idx]

    def client_test(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of client ``k``'s local test set."""
        idx = torch.from_numpy(self.test_indices[k].copy())
        return self.dataset.x_test[idx], self.dataset.y_test[idx]


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.int64)
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
    data = load_dataset(dataset, json.loads(options_json), seed)
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
    train = [pool[idx] for idx in local]
    test = local_test_indices(
        [labels[idx] for idx in local],
        len(pool),
        data.y_test.numpy(),
        data.num_classes,
        derive_rng(seed, SALT_LOCAL_TEST),
    )
    counts = np.stack([np.bincount(labels[idx], minlength=data.num_classes) for idx in local])
    return FederatedData(
        dataset=data,
        train_indices=[_frozen(t) for t in train],
        test_indices=[_frozen(t) for t in test],
        train_class_counts=_frozen(counts),
    )


def clear_federated_cache() -> None:
    """Forget every cached `FederatedData`."""
    _FEDERATED.clear()
