"""Server-side strategies, registered by name.

Adding an algorithm: one module here registering its strategy factory, and one
module in ``clients/`` registering its client handlers under the same name.
"""

from fedsim.strategies.registry import STRATEGIES, build_strategy

# Each module registers itself; the list is explicit so that nothing depends on
# an import side effect elsewhere.
from fedsim.strategies import creamfl, fedavg, fedloge, fedprox, pfedpg  # noqa: F401  isort: skip

__all__ = ["STRATEGIES", "build_strategy"]
