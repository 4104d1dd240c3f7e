"""FedProx (Li et al., MLSys 2020, https://arxiv.org/abs/1812.06127).

Server side it is FedAvg that sends ``proximal-mu``; each client minimises
F_k(w) + (mu / 2) * ||w - w_t||^2 (see ``clients/fedprox.py``), as Flower's
``FedProx`` strategy does.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from fedsim.config import Params, Scenario
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.registry import STRATEGIES


class FedProxParams(Params):
    """FedProx's proximal weight."""

    mu: float = Field(0.01, ge=0, description="weight of the proximal term")


class FedProx(FedAvg):
    """FedAvg plus ``proximal-mu`` in every train config."""

    def __init__(self, scenario: Scenario, mu: float) -> None:
        super().__init__(scenario)
        self.proximal_mu = mu

    def train_config(self, server_round: int) -> dict[str, Any]:
        """Add the proximal weight, under Flower's key."""
        return {"proximal-mu": self.proximal_mu}


@STRATEGIES.register("fedprox", params=FedProxParams, summary="FedAvg with a proximal term (Li et al. 2020)")
def make_fedprox(scenario: Scenario, params: FedProxParams) -> FedProx:
    """Build FedProx for a scenario."""
    return FedProx(scenario, params.mu)
