"""Client side of every fedsim algorithm (Flower ClientApp handlers)."""

from fedsim.clients.registry import CLIENT_ALGORITHMS, ClientAlgorithm

# Explicit list: every client module registers its handlers here.
from fedsim.clients import creamfl, fedavg, fedloge, fedprox, pfedpg  # noqa: F401  isort: skip

__all__ = ["CLIENT_ALGORITHMS", "ClientAlgorithm"]
