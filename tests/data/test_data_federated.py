"""build_federated: long tail + partition + local test sets, cached."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from fedsim.data import FederatedData, build_federated, class_groups, long_tail_counts
from fedsim.errors import UserError


def build(**kw: object) -> FederatedData:
    args: dict = {
        "dataset": "digits",
        "dataset_options": {},
        "partition": "dirichlet",
        "partition_params": {"alpha": 0.5},
        "num_clients": 10,
        "seed": 0,
        "imbalance_factor": None,
    }
    args.update(kw)
    return build_federated(**args)


def test_split_covers_the_train_set_once() -> None:
    fed = build()
    n = len(fed.dataset.y_train)
    assert fed.num_clients == 10
    allidx = np.concatenate(fed.train_indices)
    assert np.array_equal(np.sort(allidx), np.arange(n))
    y = fed.dataset.y_train.numpy()
    counts = np.stack([np.bincount(y[i], minlength=10) for i in fed.train_indices])
    assert np.array_equal(fed.train_class_counts, counts)
    assert fed.train_class_counts.shape == (10, 10)


def test_long_tail_composes_with_the_partition() -> None:
    fed = build(imbalance_factor=10.0, partition="shards", partition_params={})
    y = fed.dataset.y_train.numpy()
    expected = long_tail_counts(np.bincount(y), 10.0)
    assert fed.class_counts.tolist() == expected.tolist()
    assert expected[0] / expected[-1] == pytest.approx(10.0, rel=0.1)
    allidx = np.concatenate(fed.train_indices)
    assert len(np.unique(allidx)) == len(allidx) == expected.sum()
    groups = class_groups(fed.class_counts)
    assert groups["head"][0] == 0 and 9 in groups["tail"]


def test_local_test_sets_mirror_training_distribution() -> None:
    fed = build(imbalance_factor=5.0)
    n_total = int(fed.class_counts.sum())
    y_test = fed.dataset.y_test.numpy()
    available = np.bincount(y_test, minlength=10)
    for k in range(fed.num_clients):
        want = np.minimum(fed.train_class_counts[k] * len(y_test) // n_total, available)
        got = np.bincount(y_test[fed.test_indices[k]], minlength=10)
        assert got.tolist() == want.tolist()
    x, y = fed.client_test(3)
    assert len(x) == len(y) == len(fed.test_indices[3])
    x, y = fed.client_train(3)
    assert torch.equal(y, fed.dataset.y_train[torch.from_numpy(fed.train_indices[3].copy())])


def test_cached_deterministic_and_read_only() -> None:
    a = build(seed=7)
    assert build(seed=7) is a
    assert build(seed=7, dataset_options={"test_fraction": 0.2}) is a  # defaults filled in
    b = build(seed=8)
    assert not all(np.array_equal(x, y) for x, y in zip(a.train_indices, b.train_indices, strict=True))
    with pytest.raises(ValueError, match="read-only"):
        a.train_indices[0][0] = 0


def test_more_clients_than_samples_is_a_user_error() -> None:
    with pytest.raises(UserError) as err:
        build(num_clients=5000, partition="iid", partition_params={})
    assert str(err.value) == (
        "clients.num is 5000 but the dataset has 1437 training samples; expected at most 1437"
    )
    with pytest.raises(UserError, match="after the long-tail subsampling"):
        build(num_clients=1000, partition="iid", partition_params={}, imbalance_factor=10.0)


def test_bad_inputs() -> None:
    with pytest.raises(ValidationError):
        build(partition_params={"alpha": -1})
    with pytest.raises(ValidationError):
        build(dataset_options={"test_fraction": 2})
    with pytest.raises(UserError, match="unknown partitioner"):
        build(partition="label_skew")
    with pytest.raises(UserError, match="seed is -1; expected a non-negative integer"):
        build(seed=-1)
