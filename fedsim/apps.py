"""References to fedsim's Flower apps (the same strings as in pyproject.toml).

fedsim reaches the client side only through this reference and the registries,
never by importing an algorithm module by name.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

SERVERAPP = "fedsim.server.app:app"
CLIENTAPP = "fedsim.clients.app:app"
#: Trains several train messages of one round at once (fedsim's own grids only).
COHORT_HANDLER = "fedsim.clients.app:answer_cohort"

#: The Flower App configuration: the same as ``[tool.flwr.app]`` in pyproject.toml
#: (a test keeps them equal). Runtimes that go through ``flwr run`` submit a small
#: generated app folder with this configuration rather than the source tree, whose
#: walk alone costs seconds per run; the code itself is imported from the installed
#: packages.
FLOWER_APP: dict[str, Any] = {
    "publisher": "fedsim",
    "components": {"serverapp": SERVERAPP, "clientapp": CLIENTAPP},
    "config": {"scenario": "", "run-dir": "", "resume": False, "stop-after": 0},
}


def write_app_dir(path: Path) -> Path:
    """Write a minimal Flower App folder (pyproject.toml only) at ``path``."""
    import tomli_w

    import fedsim

    path.mkdir(parents=True, exist_ok=True)
    doc = {
        "build-system": {"requires": ["setuptools>=69"], "build-backend": "setuptools.build_meta"},
        "project": {
            "name": "fedsim-app",
            "version": fedsim.__version__,
            "description": "fedsim's ServerApp and ClientApp",
            "dependencies": [f"fedsim=={fedsim.__version__}"],
        },
        "tool": {"flwr": {"app": FLOWER_APP}},
    }
    (path / "pyproject.toml").write_text(tomli_w.dumps(doc))
    return path


def write_submission(work: Path, run_config: dict) -> tuple[Path, Path]:
    """What ``flwr run`` submits: the app folder ``work/app`` and ``work/run-config.toml``."""
    import tomli_w

    overrides = work / "run-config.toml"
    app_dir = write_app_dir(work / "app")
    overrides.write_text(tomli_w.dumps(run_config))
    return app_dir, overrides


def load_app(reference: str) -> Any:
    """Import ``module:attribute``."""
    module, _, attr = reference.partition(":")
    return getattr(importlib.import_module(module), attr)
