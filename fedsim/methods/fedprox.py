"""FedProx's parameters and the config key both halves use (Li et al., MLSys 2020).

The server sends mu under ``proximal-mu`` (Flower's key); each client adds
(mu / 2) * ||w - w_t||^2 to its local loss.
"""

from __future__ import annotations

from pydantic import Field

from fedsim.methods.robust import AggregationParams

#: Key of mu in every train config.
MU_KEY = "proximal-mu"


class FedProxParams(AggregationParams):
    """FedProx's proximal weight, and how the server combines the weights (as FedAvg)."""

    mu: float = Field(0.01, ge=0, description="weight of the proximal term")
