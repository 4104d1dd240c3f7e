"""Classification metrics shared by algorithms: accuracy per class group, masking.

Group metrics are reported as ``accuracy-<group>`` with their sample count
``num-examples-<group>``; :func:`fedsim.strategies.base.aggregate_metrics` weights
each group's accuracy by that count when averaging over clients.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from fedsim.data import class_groups
from fedsim.scenario import Scenario
from fedsim.workspace import federated_data

#: The long-tail class groups of METHODS.md (75% / 95% of the training samples).
GROUPS = ("head", "middle", "tail")
#: Logit given to classes that are masked out.
MASKED = -1e9


@lru_cache(maxsize=8)
def _groups(text: str) -> tuple[torch.Tensor, ...]:
    from fedsim.workspace import scenario_of

    counts = federated_data(scenario_of(text)).class_counts
    groups = class_groups(np.asarray(counts))
    return tuple(torch.tensor(groups[g], dtype=torch.long) for g in GROUPS)


def class_group_index(scenario: Scenario) -> dict[str, torch.Tensor]:
    """Class indices of the head, middle and tail groups of the scenario's training set."""
    return dict(zip(GROUPS, _groups(scenario.to_json()), strict=True))


def group_accuracy(
    pred: torch.Tensor, y: torch.Tensor, groups: dict[str, torch.Tensor], prefix: str = "accuracy"
) -> dict[str, float]:
    """``{prefix}-{group}`` accuracy and ``num-examples-{group}`` for each group."""
    out: dict[str, float] = {}
    for name, classes in groups.items():
        sel = torch.isin(y, classes)
        n = int(sel.sum())
        out[f"num-examples-{name}"] = n
        out[f"{prefix}-{name}"] = float((pred[sel] == y[sel]).float().mean()) if n else 0.0
    return out


def mask_absent(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Logits with classes not in ``present`` (bool [C]) set to a large negative value."""
    return logits.masked_fill(~present.to(logits.device), MASKED)


def present_classes(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Bool [C]: which classes occur in ``y``."""
    return torch.bincount(y, minlength=num_classes) > 0
