"""Splitting a labelled training set over clients, and the sets derived from a split.

Every function here is pure: it takes numpy label arrays and an explicit
``np.random.Generator`` and never touches global random state. A partitioner returns one
sorted index array per client; every sample goes to exactly one client.

- ``iid``: a uniform random split into near-equal parts.
- ``dirichlet``: for each class, proportions over clients drawn from Dirichlet(alpha)
  (Hsu et al., 2019, "Measuring the effects of non-identical data distribution").
- ``shards``: sort by label, cut ``K * k`` equal shards, deal ``k`` to each client
  (McMahan et al., 2017, "Communication-efficient learning of deep networks").

`long_tail_indices` (the exponential profile of Cao et al., 2019, as used by FedLoGe) is
applied to the training set before any partitioner, `local_test_indices` gives each client
a test set that mirrors its training distribution, and `class_groups` splits classes into
head, middle and tail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from fedsim.config import NoParams, Params
from fedsim.errors import UserError
from fedsim.registry import Registry

#: (labels, number of clients, the partitioner's own validated parameters, rng) -> indices per client
Partitioner = Callable[[np.ndarray, int, Any, np.random.Generator], list[np.ndarray]]
PARTITIONERS: Registry[Partitioner] = Registry("partitioner")

MAX_DIRICHLET_ATTEMPTS = 100


class DirichletParams(Params):
    """Parameters of ``dirichlet``."""

    alpha: float = Field(gt=0, description="concentration; small alpha = strong label skew")
    min_samples: int = Field(1, ge=1, description="redraw until every client has this many")


class ShardsParams(Params):
    """Parameters of ``shards``."""

    shards_per_client: int = Field(2, ge=1, description="label-sorted shards per client")


def _check_clients(labels: np.ndarray, num_clients: int, at_least: int = 1) -> None:
    if num_clients < 1:
        raise UserError(f"clients.num is {num_clients}; expected at least 1")
    if num_clients * at_least > len(labels):
        raise UserError(
            f"clients.num is {num_clients} but the dataset has {len(labels)} training "
            f"samples; expected at most {len(labels) // at_least}"
        )


@PARTITIONERS.register("iid", NoParams, "uniform random split into near-equal parts")
def iid(
    labels: np.ndarray, num_clients: int, params: BaseModel, rng: np.random.Generator
) -> list[np.ndarray]:
    """Split the samples uniformly at random into ``num_clients`` near-equal parts.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels ``[N]`` (only the length matters).
    num_clients : int
        Number of clients K (1 <= K <= N).
    params : NoParams
        No parameters.
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    list of np.ndarray
        K sorted index arrays whose sizes differ by at most one.
    """
    _check_clients(labels, num_clients)
    parts = np.array_split(rng.permutation(len(labels)), num_clients)
    return [np.sort(p) for p in parts]


def _dirichlet_once(
    labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    buckets: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        p = rng.dirichlet(np.full(num_clients, alpha))
        if not np.all(np.isfinite(p)):  # underflow at tiny alpha: one client takes it all
            p = np.eye(num_clients)[rng.integers(num_clients)]
        cuts = np.round(np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
        for k, part in enumerate(np.split(idx, cuts)):
            buckets[k].append(part)
    return [np.sort(np.concatenate(b)).astype(np.int64) for b in buckets]


@PARTITIONERS.register("dirichlet", DirichletParams, "per-class Dirichlet(alpha) label skew")
def dirichlet(
    labels: np.ndarray, num_clients: int, params: DirichletParams, rng: np.random.Generator
) -> list[np.ndarray]:
    """Share each class over clients with Dirichlet(alpha) proportions.

    For each class c, p_c ~ Dir(alpha * 1_K) and the class's samples (shuffled) are cut at
    the cumulative proportions. The whole draw is repeated, up to
    `MAX_DIRICHLET_ATTEMPTS` times, until every client has at least ``min_samples``.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels ``[N]``.
    num_clients : int
        Number of clients K.
    params : DirichletParams
        ``alpha`` (concentration) and ``min_samples``.
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    list of np.ndarray
        K sorted index arrays.

    Raises
    ------
    UserError
        When no draw gives every client ``min_samples`` samples.
    """
    _check_clients(labels, num_clients, params.min_samples)
    for _ in range(MAX_DIRICHLET_ATTEMPTS):
        parts = _dirichlet_once(labels, num_clients, params.alpha, rng)
        if min(len(p) for p in parts) >= params.min_samples:
            return parts
    raise UserError(
        f"dirichlet(alpha={params.alpha}) left a client with fewer than "
        f"{params.min_samples} samples in {MAX_DIRICHLET_ATTEMPTS} draws over "
        f"{num_clients} clients and {len(labels)} samples; expected fewer clients, a "
        "larger alpha or a smaller min_samples"
    )


@PARTITIONERS.register("shards", ShardsParams, "McMahan's label-sorted shards, k per client")
def shards(
    labels: np.ndarray, num_clients: int, params: ShardsParams, rng: np.random.Generator
) -> list[np.ndarray]:
    """McMahan's pathological non-IID split.

    Sort the samples by label (random order within a label), cut them into
    ``K * shards_per_client`` shards of equal size (differing by at most one), and deal
    ``shards_per_client`` shards at random to each client.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels ``[N]``.
    num_clients : int
        Number of clients K.
    params : ShardsParams
        ``shards_per_client`` (k).
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    list of np.ndarray
        K sorted index arrays.

    Raises
    ------
    UserError
        When there are fewer samples than shards.
    """
    k = params.shards_per_client
    _check_clients(labels, num_clients, k)
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    pieces = np.array_split(by_label, num_clients * k)
    deal = rng.permutation(num_clients * k).reshape(num_clients, k)
    return [np.sort(np.concatenate([pieces[s] for s in row])) for row in deal]


def long_tail_counts(class_counts: np.ndarray, imbalance_factor: float) -> np.ndarray:
    """Per-class sizes of the exponential long-tail profile.

    n_c = floor(n_max * IF^(-c / (C - 1))), with n_max the smallest available class count
    so that every class can be filled; n_0 / n_{C-1} = IF up to rounding.

    Parameters
    ----------
    class_counts : np.ndarray
        Available samples per class ``[C]``.
    imbalance_factor : float
        IF = n_0 / n_{C-1}, at least 1.

    Returns
    -------
    np.ndarray
        int64 ``[C]`` target counts.

    Raises
    ------
    UserError
        When IF < 1, a class has no samples, or IF is so large that the last class
        would be empty.
    """
    counts = np.asarray(class_counts, dtype=np.int64)
    num_classes = len(counts)
    if imbalance_factor < 1:
        raise UserError(f"imbalance_factor is {imbalance_factor}; expected at least 1")
    n_max = int(counts.min())
    if n_max == 0:
        empty = int(np.argmin(counts))
        raise UserError(f"class {empty} has no training samples; a long tail needs every class")
    exponent = -np.arange(num_classes) / max(num_classes - 1, 1)
    target = np.floor(n_max * imbalance_factor**exponent + 1e-9).astype(np.int64)
    if target[-1] < 1:
        raise UserError(
            f"imbalance_factor {imbalance_factor} leaves class {num_classes - 1} empty "
            f"(the smallest class has {n_max} samples); expected at most {n_max}"
        )
    return target


def long_tail_indices(
    labels: np.ndarray, num_classes: int, imbalance_factor: float, rng: np.random.Generator
) -> np.ndarray:
    """Subsample a training set to the exponential long-tail profile.

    Class c (by class index) keeps n_c = floor(n_max * IF^(-c / (C - 1))) samples drawn
    without replacement, where n_max is the smallest class count (see
    `long_tail_counts`).

    Parameters
    ----------
    labels : np.ndarray
        Integer labels ``[N]`` in ``range(num_classes)``.
    num_classes : int
        Number of classes C.
    imbalance_factor : float
        IF = n_0 / n_{C-1}, at least 1.
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    np.ndarray
        Sorted indices of the kept samples.
    """
    labels = np.asarray(labels)
    target = long_tail_counts(np.bincount(labels, minlength=num_classes), imbalance_factor)
    kept = [rng.choice(np.flatnonzero(labels == c), size=int(n), replace=False) for c, n in enumerate(target)]
    return np.sort(np.concatenate(kept)).astype(np.int64)


def local_test_indices(
    client_train_labels: list[np.ndarray],
    n_train_total: int,
    test_labels: np.ndarray,
    num_classes: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Each client's local test set, mirroring its training label distribution.

    Client k gets floor(n_train[k, c] / n_train_total * n_test) test samples of class c,
    drawn without replacement from the test set and capped at the number there. Clients
    may share test samples with each other.

    Parameters
    ----------
    client_train_labels : list of np.ndarray
        The training labels of each client.
    n_train_total : int
        Size of the (possibly long-tailed) training set over all clients.
    test_labels : np.ndarray
        Labels of the global test set ``[n_test]``.
    num_classes : int
        Number of classes C.
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    list of np.ndarray
        Sorted indices into the test set, one array per client.
    """
    test_labels = np.asarray(test_labels)
    n_test = len(test_labels)
    by_class = [np.flatnonzero(test_labels == c) for c in range(num_classes)]
    available = np.array([len(b) for b in by_class])
    out = []
    for labels in client_train_labels:
        n_train = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
        want = n_train * n_test // max(n_train_total, 1)  # exact integer floor
        size = np.minimum(want, available)
        # a draw of no samples takes nothing from rng, so skipping it changes nothing
        parts = [rng.choice(by_class[c], size=int(size[c]), replace=False) for c in np.flatnonzero(size)]
        out.append(np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64))
    return out


def class_groups(class_counts: np.ndarray) -> dict[str, list[int]]:
    """Split classes into head, middle and tail by their share of the samples.

    Classes are sorted by count, descending. A class is in the head when the classes
    strictly more frequent than it hold less than 75% of all samples, in the middle when
    they hold less than 95%, otherwise in the tail. Classes of equal count are in the same
    group, so a balanced set has only head classes (and no middle or tail group); a class
    with no samples has no group.

    Parameters
    ----------
    class_counts : np.ndarray
        Samples per class ``[C]``, not all zero.

    Returns
    -------
    dict of str to list of int
        ``{"head": [...], "middle": [...], "tail": [...]}``, class indices in ascending
        order; every class with samples is in exactly one group; a group may be empty.

    Examples
    --------
    >>> class_groups([10, 50, 30, 4, 6])
    {'head': [1, 2], 'middle': [0, 4], 'tail': [3]}
    >>> class_groups([5, 5, 5, 5])
    {'head': [0, 1, 2, 3], 'middle': [], 'tail': []}
    """
    counts = np.asarray(class_counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("class_groups needs at least one sample")
    groups: dict[str, list[int]] = {"head": [], "middle": [], "tail": []}
    for c, n in enumerate(counts):
        if n <= 0:
            continue
        share = counts[counts > n].sum() / total
        name = "head" if share < 0.75 else "middle" if share < 0.95 else "tail"
        groups[name].append(c)
    return groups
