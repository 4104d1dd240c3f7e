"""Classification metrics shared by algorithms: accuracy per class group, masking.

Group metrics are reported as ``accuracy-<group>`` with their sample count
``num-examples-<group>``; a group without samples has no accuracy: a client reports NaN
(every reply carries the same keys, as Flower's strategies require), which aggregation
skips, and the rows written to the run folder leave out (metrics.jsonl) or write as null
(clients.jsonl); it is never 0. On the server the groups come from the training set's class counts; on a
client, from the class counts of its own local test set (as FedLoGe's authors do), and
:func:`fedsim.strategies.base.aggregate_evaluation` averages each group's accuracy over
the clients that have samples in it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fedsim.config import Scenario
from fedsim.data import class_groups
from fedsim.memo import Memo, memo
from fedsim.workspace import federated_data

#: The long-tail class groups of docs/algorithms/fedloge.md (75% / 95% of the samples).
GROUPS = ("head", "middle", "tail")
#: Logit given to classes that are masked out.
MASKED = -1e9


_GROUPS: Memo[tuple[torch.Tensor, ...]] = memo("metrics.class_groups", 8)  # key: scenario JSON


def _groups(text: str) -> tuple[torch.Tensor, ...]:
    from fedsim.workspace import scenario_of

    counts = federated_data(scenario_of(text)).class_counts
    groups = class_groups(np.asarray(counts))
    return tuple(torch.tensor(groups[g], dtype=torch.long) for g in GROUPS)


def class_group_index(scenario: Scenario) -> dict[str, torch.Tensor]:
    """Class indices of the head, middle and tail groups of the scenario's training set."""
    text = scenario.to_json()
    return dict(zip(GROUPS, _GROUPS.get(text, lambda: _groups(text)), strict=True))


def group_accuracy(
    pred: torch.Tensor, y: torch.Tensor, groups: dict[str, torch.Tensor], prefix: str = "accuracy"
) -> dict[str, float]:
    """``num-examples-{group}`` and ``{prefix}-{group}`` accuracy for each group (NaN for a
    group without samples in ``y``)."""
    out: dict[str, float] = {}
    for name, classes in groups.items():
        sel = torch.isin(y, classes)
        n = int(sel.sum())
        out[f"num-examples-{name}"] = n
        out[f"{prefix}-{name}"] = float((pred[sel] == y[sel]).float().mean()) if n else math.nan
    return out


def server_group_accuracy(
    pred: torch.Tensor, y: torch.Tensor, scenario: Scenario, name: str
) -> dict[str, float]:
    """``{name}_accuracy_{group}`` on the global test set, for each group that has samples."""
    found = group_accuracy(pred, y, class_group_index(scenario))
    return {
        f"{name}_accuracy_{g}": found[f"accuracy-{g}"]
        for g in GROUPS
        if not math.isnan(found[f"accuracy-{g}"])
    }


def local_class_groups(y: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    """Head, middle and tail classes of one client, from the class counts of its labels ``y``."""
    counts = torch.bincount(y, minlength=num_classes).numpy()
    if counts.sum() == 0:
        return {g: torch.zeros(0, dtype=torch.long) for g in GROUPS}
    groups = class_groups(counts)
    return {g: torch.tensor(groups[g], dtype=torch.long) for g in GROUPS}


def local_accuracy(
    logits: torch.Tensor, y: torch.Tensor, groups: dict[str, torch.Tensor], prefix: str = "accuracy"
) -> dict[str, float]:
    """``{prefix}`` (0.0 without samples) and its per-group accuracies of one client's logits."""
    pred = logits.argmax(1)
    acc = float((pred == y).float().mean()) if len(y) else 0.0
    return {prefix: acc, **group_accuracy(pred, y, groups, prefix)}


def mask_absent(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Logits with classes not in ``present`` (bool [C]) set to a large negative value."""
    return logits.masked_fill(~present.to(logits.device), MASKED)


def present_classes(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Bool [C]: which classes occur in ``y``.

    Local evaluation masks the classes absent from a client's *local test set* (FedLoGe's
    authors' ``localtest``): the local test set has floor(n_train[k, c] * n_test / N_train)
    samples of class c, so a class with a sample or two in training is masked too.
    """
    return torch.bincount(y, minlength=num_classes) > 0
