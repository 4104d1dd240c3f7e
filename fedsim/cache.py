"""The one folder where fedsim caches what it generates (SSE-C, teachers, calibrations, ...)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where generated artefacts are cached: ``$FEDSIM_CACHE`` or ``~/.cache/fedsim``."""
    return Path(os.environ.get("FEDSIM_CACHE", Path.home() / ".cache" / "fedsim"))
