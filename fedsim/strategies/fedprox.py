"""FedProx (Li et al., MLSys 2020, https://arxiv.org/abs/1812.06127).

Server side it is FedAvg that sends ``proximal-mu``; each client minimises
F_k(w) + (mu / 2) * ||w - w_t||^2 (see ``clients/fedprox.py``), as Flower's
``FedProx`` strategy does.
"""

from __future__ import annotations

from typing import Any

from fedsim.config import Scenario
from fedsim.methods.fedprox import MU_KEY, FedProxParams
from fedsim.strategies.fedavg import FedAvg


class FedProx(FedAvg):
    """FedAvg plus ``proximal-mu`` in every train config."""

    def __init__(self, scenario: Scenario, params: FedProxParams) -> None:
        super().__init__(scenario, params)
        self.proximal_mu = params.mu

    def train_config(self, server_round: int) -> dict[str, Any]:
        """Add the proximal weight, under Flower's key."""
        return {MU_KEY: self.proximal_mu}
