"""References to fedsim's Flower apps (the same strings as in pyproject.toml).

fedsim reaches the client side only through this reference and the registries,
never by importing an algorithm module by name.
"""

from __future__ import annotations

import importlib
from typing import Any

SERVERAPP = "fedsim.server.app:app"
CLIENTAPP = "clients.app:app"


def load_app(reference: str) -> Any:
    """Import ``module:attribute``."""
    module, _, attr = reference.partition(":")
    return getattr(importlib.import_module(module), attr)
