"""The algorithm registry (server side)."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from fedsim.config import Scenario
from fedsim.registry import Registry
from fedsim.strategies.base import FedsimStrategyMixin

StrategyFactory = Callable[[Scenario, BaseModel], FedsimStrategyMixin]

STRATEGIES: Registry[StrategyFactory] = Registry("algorithm")


def build_strategy(scenario: Scenario) -> FedsimStrategyMixin:
    """The strategy a scenario names, built with its validated parameters."""
    entry = STRATEGIES.entry(scenario.algorithm.name)
    return entry.obj(scenario, entry.params.model_validate(scenario.algorithm.params))
