"""Every algorithm of fedsim, each registered once: its server, its client and its parameters.

An :class:`Algorithm` holds the strategy factory (server half), the client handlers
(client half), the parameter model and any extra ``fedsim`` verbs the algorithm brings.
:func:`register` puts it in :data:`ALGORITHMS`, the one table that ``fedsim list
algorithms``, validation, the server, the ClientApp and the command line read.

Adding an algorithm: its maths, record keys and parameter model in
``fedsim/methods/<name>.py``, its server in ``fedsim/strategies/<name>.py``, its client in
``clients/<name>.py`` (neither imports the other), and one ``register(Algorithm(...))``
call at the end of this file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from fedsim.clients import creamfl as creamfl_client
from fedsim.clients import fedavg as fedavg_client
from fedsim.clients import fedloge as fedloge_client
from fedsim.clients import fedprox as fedprox_client
from fedsim.clients import pfedpg as pfedpg_client
from fedsim.clients.common import ClientAlgorithm
from fedsim.cohort import unsupported_layer
from fedsim.config import Scenario
from fedsim.devices import resolve as resolve_device
from fedsim.errors import UserError
from fedsim.memo import Memo, memo
from fedsim.methods.creamfl import CreamFLParams
from fedsim.methods.fedloge import FedLoGeParams
from fedsim.methods.fedprox import FedProxParams
from fedsim.methods.pfedpg import VARIANTS, PromptParams, Variant, pretrain_command
from fedsim.methods.robust import AggregationParams
from fedsim.registry import Registry
from fedsim.strategies.base import FedsimStrategyMixin
from fedsim.strategies.creamfl import CreamFL
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.fedloge import FedLoGe
from fedsim.strategies.fedprox import FedProx
from fedsim.strategies.pfedpg import PromptStrategy
from fedsim.workspace import new_model

P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True)
class Command:
    """An extra verb an algorithm adds: ``fedsim NAME SCENARIO [--set KEY=VALUE] [--out FILE]``.

    ``run`` gets the loaded scenario and ``--out``; it returns the line to print.
    """

    name: str
    help: str
    run: Callable[[Scenario, Path | None], str]
    out_help: str = "Also write the result to this file."


@dataclass(frozen=True)
class Algorithm(Generic[P]):
    """One algorithm: both halves, the parameters they share, and its extra verbs."""

    name: str
    summary: str
    params: type[P]
    strategy: Callable[[Scenario, P], FedsimStrategyMixin]
    client: ClientAlgorithm
    commands: tuple[Command, ...] = ()


ALGORITHMS: Registry[Algorithm[Any]] = Registry("algorithm")


def register(algorithm: Algorithm[P]) -> Algorithm[P]:
    """Add ``algorithm`` to :data:`ALGORITHMS` (each name once)."""
    ALGORITHMS.register(algorithm.name, params=algorithm.params, summary=algorithm.summary)(algorithm)
    return algorithm


def build_strategy(scenario: Scenario) -> FedsimStrategyMixin:
    """The strategy a scenario names, built with its validated parameters."""
    algorithm = ALGORITHMS.get(scenario.algorithm.name)
    return algorithm.strategy(scenario, algorithm.params.model_validate(scenario.algorithm.params))


def client_of(name: str) -> ClientAlgorithm:
    """The client handlers of the algorithm ``name``."""
    return ALGORITHMS.get(name).client


def cohort_plan(scenario: Scenario) -> tuple[bool, str]:
    """Whether a run trains each round's clients as vectorised cohorts, and why (or why not).

    ``train.vectorise``: ``off`` never; ``auto`` where the runtime delivers a round's messages
    together (``inprocess``, or ``ray`` with ``engine: fedsim``), the algorithm registers a
    cohort trainer and no layer of the model prevents it; ``on`` likewise, or a `UserError`
    naming what prevents it.
    """
    return _PLANS.get(scenario.to_json(), lambda: _cohort_plan(scenario))


_PLANS: Memo[tuple[bool, str]] = memo("algorithms.cohort_plan", 8)  # key: scenario JSON


def _cohort_plan(scenario: Scenario) -> tuple[bool, str]:
    mode, runtime, name = scenario.train.vectorise, scenario.runtime, scenario.algorithm.name
    if mode == "off":
        return False, "train.vectorise is off"
    why = ""
    if not (runtime.name == "inprocess" or (runtime.name == "ray" and runtime.engine == "fedsim")):
        why = f"runtime {runtime.name} hands each client its messages one at a time"
    elif resolve_device(scenario.train.device).type != "cpu":
        why = f"train.device is {scenario.train.device} (cohorts train on the CPU)"
    elif scenario.faults.injected():
        why = "faults are injected (each client commits its own in its own call)"
    elif client_of(name).train_cohort is None:
        have = ", ".join(sorted(k for k in ALGORITHMS.names() if client_of(k).train_cohort is not None))
        why = f"algorithm {name} has no cohort trainer ({have} have)"
    else:
        layer = unsupported_layer(new_model(scenario))
        why = f"model layer {layer} prevents it" if layer else ""
    if not why:
        return True, "each round's clients trained as vectorised cohorts"
    if mode == "on":
        raise UserError(f"train.vectorise is on but {why}; expected train.vectorise: auto or off")
    return False, why


def commands() -> list[Command]:
    """The extra verbs of every algorithm, each once (a verb several algorithms share counts once)."""
    found: dict[str, Command] = {}
    for entry in ALGORITHMS:
        for command in entry.obj.commands:
            if found.setdefault(command.name, command) is not command:
                raise ValueError(f"two algorithms add different commands named {command.name!r}")
    return list(found.values())


# ----------------------------------------------------------------------------- the algorithms

register(
    Algorithm(
        "fedavg",
        "Federated averaging (McMahan et al. 2017)",
        AggregationParams,
        lambda scenario, params: FedAvg(scenario, params),
        fedavg_client.HANDLERS,
    )
)
register(
    Algorithm(
        "fedprox",
        "FedAvg with a proximal term (Li et al. 2020)",
        FedProxParams,
        lambda scenario, params: FedProx(scenario, params),
        fedprox_client.HANDLERS,
    )
)
register(
    Algorithm(
        "fedloge",
        "Static sparse ETF + realignment (Xiao et al. 2024)",
        FedLoGeParams,
        lambda scenario, params: FedLoGe(scenario),
        fedloge_client.HANDLERS,
    )
)
register(
    Algorithm(
        "creamfl",
        "Contrastive representation ensemble, multimodal (Yu et al. 2023)",
        CreamFLParams,
        CreamFL,
        creamfl_client.HANDLERS,
    )
)

#: pFedPG's backbone pretraining, a verb of every prompt algorithm (they share the backbone).
PRETRAIN = Command(
    "pretrain",
    "Pretrain (or find in the cache) the frozen backbone of a prompt-tuning scenario (pfedpg).",
    pretrain_command,
    out_help="Also copy the checkpoint to this file.",
)


def _prompt_algorithm(variant: Variant) -> Algorithm[PromptParams]:
    """One of the five prompt algorithms: the same strategy and client, set up by ``variant``."""

    def strategy(scenario: Scenario, params: PromptParams) -> FedsimStrategyMixin:
        return PromptStrategy(scenario, variant)

    client = pfedpg_client.handlers(variant)
    return Algorithm(variant.name, variant.summary, variant.params, strategy, client, (PRETRAIN,))


for _variant in VARIANTS.values():
    register(_prompt_algorithm(_variant))
