"""Partitioners, the long-tail profile, local test sets and head/middle/tail groups."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fedsim.data.partition import (
    PARTITIONERS,
    class_groups,
    local_test_indices,
    long_tail_counts,
    long_tail_indices,
)
from fedsim.errors import UserError

CASES = [("iid", {}), ("dirichlet", {"alpha": 0.5}), ("shards", {"shards_per_client": 2})]


def balanced_labels(per_class: int = 100, num_classes: int = 10) -> np.ndarray:
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(123).permutation(labels)


def split(name: str, params: dict, labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    entry = PARTITIONERS.entry(name)
    return entry.obj(labels, k, entry.params.model_validate(params), np.random.default_rng(seed))


def assert_partition(parts: list[np.ndarray], n: int, k: int) -> None:
    assert len(parts) == k
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0), "sorted, no repeats within a client"
    allidx = np.concatenate(parts)
    assert len(allidx) == n, "no sample lost or duplicated across clients"
    assert np.array_equal(np.sort(allidx), np.arange(n))


@pytest.mark.parametrize(("name", "params"), CASES)
def test_every_sample_goes_to_exactly_one_client(name: str, params: dict) -> None:
    labels = balanced_labels()
    assert_partition(split(name, params, labels, 10, seed=0), len(labels), 10)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_deterministic_for_a_seed_and_different_for_another(name: str, params: dict) -> None:
    labels = balanced_labels()
    a = split(name, params, labels, 10, seed=1)
    b = split(name, params, labels, 10, seed=1)
    c = split(name, params, labels, 10, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


@settings(max_examples=25, deadline=None)
@given(
    name_params=st.sampled_from(CASES),
    k=st.integers(1, 10),
    per_client=st.integers(20, 40),  # enough that dirichlet(0.5) rarely needs a redraw
    num_classes=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_partition_property(
    name_params: tuple[str, dict], k: int, per_client: int, num_classes: int, seed: int
) -> None:
    name, params = name_params
    n = k * per_client
    labels = np.random.default_rng(seed).integers(num_classes, size=n)
    assert_partition(split(name, params, labels, k, seed), n, k)


def test_iid_sizes_differ_by_at_most_one() -> None:
    sizes = [len(p) for p in split("iid", {}, balanced_labels(), 7, seed=0)]
    assert max(sizes) - min(sizes) <= 1


def label_entropy(parts: list[np.ndarray], labels: np.ndarray) -> float:
    ents = []
    for p in parts:
        q = np.bincount(labels[p], minlength=10) / len(p)
        q = q[q > 0]
        ents.append(-(q * np.log(q)).sum())
    return float(np.mean(ents))


def test_dirichlet_small_alpha_is_more_skewed_than_large_alpha() -> None:
    labels = balanced_labels(200)
    skewed = label_entropy(split("dirichlet", {"alpha": 0.1}, labels, 10, 0), labels)
    uniform = label_entropy(split("dirichlet", {"alpha": 100.0}, labels, 10, 0), labels)
    assert skewed < 0.7 * uniform
    assert uniform > 0.95 * np.log(10)


def test_dirichlet_respects_min_samples() -> None:
    labels = balanced_labels(50)
    parts = split("dirichlet", {"alpha": 0.3, "min_samples": 20}, labels, 10, 0)
    assert min(len(p) for p in parts) >= 20


def test_dirichlet_impossible_min_samples_is_a_user_error() -> None:
    labels = balanced_labels(5)  # 50 samples
    with pytest.raises(UserError, match="expected fewer clients, a larger alpha"):
        split("dirichlet", {"alpha": 0.01, "min_samples": 4}, labels, 10, 0)


def test_shards_give_at_most_k_labels_in_the_classic_setup() -> None:
    labels = balanced_labels(100)  # 10 classes x 100; 20 shards of 50
    parts = split("shards", {"shards_per_client": 2}, labels, 10, 0)
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)
    assert all(len(p) == 100 for p in parts)


def test_more_clients_than_samples_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"clients\.num is 11 but the dataset has 10"):
        split("iid", {}, np.zeros(10, dtype=np.int64), 11, 0)
    with pytest.raises(UserError, match="expected at most 5"):
        split("shards", {"shards_per_client": 2}, np.zeros(10, dtype=np.int64), 6, 0)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("dirichlet", {}),
        ("dirichlet", {"alpha": 0}),
        ("dirichlet", {"alpha": -1.0}),
        ("dirichlet", {"alpha": 0.5, "min_samples": 0}),
        ("dirichlet", {"alpha": 0.5, "beta": 1}),
        ("shards", {"shards_per_client": 0}),
        ("iid", {"alpha": 1.0}),
    ],
)
def test_bad_partition_params_are_validation_errors(name: str, params: dict) -> None:
    with pytest.raises(ValidationError):
        PARTITIONERS.params_of(name, params)


def test_unknown_partitioner_lists_the_known_ones() -> None:
    known = sorted(PARTITIONERS.names())
    assert {"dirichlet", "iid", "shards"} <= set(known)
    with pytest.raises(UserError, match=", ".join(known)):
        PARTITIONERS.entry("nope")


# ------------------------------------------------------------------ long tail


def test_long_tail_counts_follow_the_formula() -> None:
    counts = np.array([500, 480, 520, 450, 600])
    target = long_tail_counts(counts, 10.0)
    n_max = 450
    expected = [int(np.floor(n_max * 10.0 ** (-c / 4))) for c in range(5)]
    assert target.tolist() == expected == [450, 253, 142, 80, 45]
    assert target[0] / target[-1] == pytest.approx(10.0, rel=0.03)


@pytest.mark.parametrize("imbalance", [1.0, 10.0, 50.0, 100.0])
def test_long_tail_indices_counts_and_imbalance(imbalance: float) -> None:
    labels = balanced_labels(200)
    idx = long_tail_indices(labels, 10, imbalance, np.random.default_rng(0))
    assert np.all(np.diff(idx) > 0)
    got = np.bincount(labels[idx], minlength=10)
    assert got.tolist() == [int(np.floor(200 * imbalance ** (-c / 9) + 1e-9)) for c in range(10)]
    assert got[0] / got[-1] == pytest.approx(imbalance, rel=0.02)


def test_long_tail_uses_the_smallest_class_as_n_max() -> None:
    labels = np.repeat(np.arange(3), [100, 40, 90])
    idx = long_tail_indices(labels, 3, 4.0, np.random.default_rng(0))
    assert np.bincount(labels[idx]).tolist() == [40, 20, 10]


def test_long_tail_too_large_or_too_small_is_a_user_error() -> None:
    labels = balanced_labels(20)
    with pytest.raises(UserError, match="expected at most 20"):
        long_tail_indices(labels, 10, 50.0, np.random.default_rng(0))
    with pytest.raises(UserError, match="expected at least 1"):
        long_tail_indices(labels, 10, 0.5, np.random.default_rng(0))
    with pytest.raises(UserError, match="class 10 has no training samples"):
        long_tail_indices(labels, 11, 2.0, np.random.default_rng(0))


# ------------------------------------------------------------- local test sets


def test_local_test_counts_follow_the_floor_rule_exactly() -> None:
    rng = np.random.default_rng(0)
    test_labels = np.repeat(np.arange(4), 30)  # 120 test samples, 30 per class
    client_labels = [
        np.repeat([0, 1], [70, 3]),
        np.repeat([1, 2, 3], [20, 9, 1]),
        np.repeat([0, 3], [200, 50]),  # asks for more class-0 samples than exist
    ]
    n_total = 353
    out = local_test_indices(client_labels, n_total, test_labels, 4, rng)
    for labels, idx in zip(client_labels, out, strict=True):
        assert np.all(np.diff(idx) > 0)
        n_train = np.bincount(labels, minlength=4)
        want = np.minimum(np.floor(n_train / n_total * 120).astype(int), 30)
        assert np.bincount(test_labels[idx], minlength=4).tolist() == want.tolist()
    # Hand-computed: floor(70*120/353) = 23, floor(3*120/353) = 1,
    # floor(200*120/353) = 67 capped at 30, floor(50*120/353) = floor(16.997) = 16.
    assert np.bincount(test_labels[out[0]], minlength=4).tolist() == [23, 1, 0, 0]
    assert np.bincount(test_labels[out[2]], minlength=4).tolist() == [30, 0, 0, 16]


# ----------------------------------------------------------- head/middle/tail


def test_class_groups_hand_computed() -> None:
    # Sorted: 1 (50), 2 (30), 0 (10), 4 (6), 3 (4); shares before: 0, .5, .8, .9, .96.
    assert class_groups(np.array([10, 50, 30, 4, 6])) == {
        "head": [1, 2],
        "middle": [0, 4],
        "tail": [3],
    }


def test_class_groups_cover_every_class_with_samples_once_and_head_is_never_empty() -> None:
    for counts in ([1000, 1, 1], [5, 5, 5, 5], [0, 3, 0], list(range(100, 0, -7))):
        groups = class_groups(np.array(counts))
        members = sorted(groups["head"] + groups["middle"] + groups["tail"])
        assert members == [c for c, n in enumerate(counts) if n > 0]
        assert groups["head"]
    assert class_groups(np.array([1000, 1, 1]))["head"] == [0]


def test_class_groups_of_a_balanced_set_are_all_head() -> None:
    # equal counts are never split by class index: CIFAR-10's layout has no middle or tail
    assert class_groups(np.full(10, 5000)) == {"head": list(range(10)), "middle": [], "tail": []}
    # ties stay together at a boundary: 3 and 3 share the classes before them (40 of 46)
    assert class_groups(np.array([40, 3, 3])) == {"head": [0], "middle": [1, 2], "tail": []}


def test_docstring_examples_run() -> None:
    import doctest

    import fedsim.data.partition as module

    result = doctest.testmod(module)
    assert result.attempted >= 1 and result.failed == 0
