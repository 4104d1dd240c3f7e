"""Per-process caches of what a scenario needs: its data, its client slices, a model.

Built once per process (the in-process runtime, each Ray actor, each device) and
reused by every client call in that process: no data or model is rebuilt per round.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedsim.config import Scenario, scenario_from_json
from fedsim.data import FederatedData, build_federated
from fedsim.memo import Memo, memo
from fedsim.models import SplitModel, build_model

_SCENARIOS: Memo[Scenario] = memo("workspace.scenario", 8)  # key: scenario JSON
# key: (scenario JSON, partition id); a client not kept reads its rows again (cheap), so
# the memo holds a round's cohort or so, not a growing share of the population
_CLIENT_DATA: Memo[ClientData] = memo("workspace.client_data", 512)
_MODELS: Memo[SplitModel] = memo("workspace.model", 8)  # key: (scenario JSON, slot)


def scenario_of(text: str) -> Scenario:
    """Parse a resolved scenario (as carried in the run config), once per process."""
    return _SCENARIOS.get(text, lambda: scenario_from_json(text))


def federated_data(scenario: Scenario) -> FederatedData:
    """The scenario's dataset and partition (cached by the data builder)."""
    d = scenario.data
    return build_federated(
        d.dataset,
        d.options,
        d.partition.name,
        d.partition.params,
        scenario.clients.num,
        scenario.seed,
        d.long_tail.imbalance_factor if d.long_tail else None,
    )


@dataclass(frozen=True)
class ClientData:
    """One client's training set and local test set, as tensors."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _client_data(text: str, partition_id: int) -> ClientData:
    fed = federated_data(scenario_of(text))
    return ClientData(*fed.client_train(partition_id), *fed.client_test(partition_id))


def client_data(scenario: Scenario, partition_id: int) -> ClientData:
    """The data of one client in simulation (cached per process)."""
    text = scenario.to_json()
    return _CLIENT_DATA.get((text, partition_id), lambda: _client_data(text, partition_id))


def new_model(scenario: Scenario) -> SplitModel:
    """A freshly initialised model for the scenario (deterministic for its seed); its
    features start from ``model.pretrained`` when the scenario names one."""
    ds = federated_data(scenario).dataset
    spec = scenario.model
    model = build_model(spec.name, spec.params, ds.input_shape, ds.num_classes, scenario.seed)
    if spec.pretrained is not None:
        from fedsim.pretrained import start_from

        fmt, layout = spec.checkpoint_option("format"), spec.checkpoint_option("layout")
        start_from(model.features, spec.name, spec.params, ds.input_shape, spec.pretrained, fmt, layout)
    return model


def worker_model(scenario: Scenario, slot: str = "client") -> SplitModel:
    """One model per process and slot, reused by every call: load weights into it in place."""
    return _MODELS.get((scenario.to_json(), slot), lambda: new_model(scenario))
