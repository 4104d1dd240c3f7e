"""Optional parts of fedsim that register their own components when a group is first used.

The core names no optional package in its code: a group (``report``) lists, here, the
modules that register into its registries, and the core calls :func:`load` before it
looks anything up. A listed package that is not installed is skipped; one that fails to
import fails loudly.
"""

from __future__ import annotations

import importlib

#: group -> modules imported (once, in this order) before the group's registries are read
PLUGINS: dict[str, tuple[str, ...]] = {
    "report": ("fedsim.edge.report",),  # edge training and edge bench runs: kinds, tables, figures
}

_loaded: set[str] = set()


def load(group: str) -> None:
    """Import the modules of ``group`` (registering what they register); later calls do nothing."""
    if group in _loaded:
        return
    for module in PLUGINS.get(group, ()):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # the listed package itself absent: skip it
            if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
                raise
    _loaded.add(group)
