"""Check every named component of a scenario against its registry."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from fedsim.registry import Registry
from fedsim.scenario import Scenario, ScenarioError, format_validation_error


def _check(
    registry: Registry[Any], name: str, params: dict[str, Any], source: str, at: str, name_at: str
) -> None:
    if name not in registry:
        known = ", ".join(registry.names())
        raise ScenarioError(
            f"{source}: {name_at}: unknown {registry.kind} {name!r}; expected one of: {known}"
        )
    model: type[BaseModel] = registry.entry(name).params
    try:
        model.model_validate(params)
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(exc, source, model, prefix=at)) from None


def check_components(scenario: Scenario, source: str) -> None:
    """Raise ScenarioError unless every named component exists and accepts its parameters."""
    from fedsim.data import DATASETS, PARTITIONERS
    from fedsim.models import MODELS
    from fedsim.runtimes import RUNTIMES
    from fedsim.strategies import STRATEGIES

    data = scenario.data
    _check(DATASETS, data.dataset, data.options, source, "data.options", "data.dataset")
    part = data.partition
    _check(PARTITIONERS, part.name, part.params, source, "data.partition", "data.partition.name")
    _check(MODELS, scenario.model.name, scenario.model.params, source, "model", "model.name")
    algo = scenario.algorithm
    _check(STRATEGIES, algo.name, algo.params, source, "algorithm", "algorithm.name")
    _check(RUNTIMES, scenario.runtime.name, {}, source, "runtime", "runtime.name")
