"""Sweeps: a grid of runs over key paths, declared by ``sweep:`` in a file or ``--sweep``.

.. code-block:: yaml

    sweep:
      algorithm.name: [pfedpg, pfedpg_base, fedvpt, vpt_local]   # a key path ...
      seed: [0, 1, 2]
      algorithm: [{}, {public_only: true}, {aggregation: mean}]  # ... or a section

Each cell of the grid (every combination, in the order the keys are given) is the file with
the cell's values applied: a value for a key path replaces it; a mapping given for a
section is merged into that section (``{}`` keeps it as it is, ``key: null`` removes a
key). The key ``case`` holds mappings merged at the top level of the file, for settings
that change several sections together. A mapping may carry ``label: NAME``, which names
it in the cell (and is not merged). Key paths may be written flat (``algorithm.name``)
or nested (``algorithm: {name: [...]}``; a list is a leaf), so ``--set sweep.seed=[0]``
narrows a grid as any other override does. A cell is named by its values
(``case=dir01,algorithm.name=fedvpt,seed=1``), which names its run folder.

.. code-block:: yaml

    sweep:
      case:
        - {label: domains, data: {partition: {name: domains}}, clients: {num: 4}}
        - {label: dir01, data: {partition: {name: dirichlet, alpha: 0.1}}, clients: {num: 10}}
      seed: [0, 1, 2]
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

import yaml

from fedsim.config.files import merge
from fedsim.errors import ConfigError

#: Most cells a grid may have.
MAX_CELLS = 1000
#: The grid key whose values are merged at the top level of the file.
CASE = "case"
#: The key of a mapping value that names it (not merged).
LABEL = "label"
#: The key whose values are repeats of the same experiment (averaged over in a sweep's table).
SEED = "seed"


@dataclass(frozen=True)
class Cell:
    """One combination of a grid: (key path, value) pairs, in the grid's key order."""

    values: tuple[tuple[str, Any], ...]

    @property
    def label(self) -> str:
        """``path=value,...`` (a mapping as its own key paths, or as ``path=LABEL`` when it
        carries a label; ``{}`` as ``path=default``): what the cell's run folder is named after."""
        parts = []
        for path, value in self.values:
            if isinstance(value, dict) and LABEL in value:
                parts.append(f"{path}={value_label(value[LABEL])}")
                continue
            flat = (
                _flatten(value, "" if path == CASE else f"{path}.")
                if isinstance(value, dict)
                else [(path, value)]
            )
            parts += [f"{k}={value_label(v)}" for k, v in flat] or [f"{path}=default"]
        return ",".join(parts)

    @property
    def folder(self) -> str:
        """:attr:`label` with every character a file name should not hold replaced by ``_``."""
        return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", self.label)[:200]

    def apply(self, raw: dict[str, Any]) -> dict[str, Any]:
        """``raw`` with this cell's values set (mappings merged into their section, ``case``
        at the top level)."""
        out = merge(raw, {})
        for path, value in self.values:
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if k != LABEL}
            if path == CASE:
                out = merge(out, value)
                continue
            *parents, last = path.split(".")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"sweep.{path}: {part} is not a section")
            if isinstance(value, dict):
                current = node.get(last)
                node[last] = merge(current if isinstance(current, dict) else {}, value)
            else:
                node[last] = value
        return out

    def get(self, path: str) -> Any:
        """The cell's value for ``path`` (KeyError when the grid has no such key)."""
        return dict(self.values)[path]


def value_label(value: Any) -> str:
    """How a value reads in a cell's name (a mapping as ``k=v+...``, ``default`` when empty)."""
    if isinstance(value, dict):
        flat = list(_flatten(value, ""))
        return "+".join(f"{k}={value_label(v)}" for k, v in flat) or "default"
    if isinstance(value, list):
        return "[" + ",".join(value_label(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _flatten(node: dict[str, Any], prefix: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _flatten(value, f"{path}.")
        else:
            out.append((path, value))
    return out


def grid_keys(spec: Any, source: str) -> dict[str, list[Any]]:
    """The grid's key paths and their values, checked (flat and nested forms; later wins)."""
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"{source}: sweep: expected a mapping of key paths to lists of values")
    keys: dict[str, list[Any]] = {}
    for path, values in _flatten(spec, ""):
        if not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", path):
            raise ConfigError(f"{source}: sweep.{path}: expected a key path such as algorithm.name")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{source}: sweep.{path}: expected a non-empty list of values, got {values!r}")
        if path == CASE and not all(isinstance(v, dict) for v in values):
            raise ConfigError(f"{source}: sweep.case: expected a list of mappings, each merged into the file")
        keys.pop(path, None)
        keys[path] = values
    return keys


def expand(spec: Any, source: str) -> list[Cell]:
    """Every cell of a grid, the first key varying slowest."""
    keys = grid_keys(spec, source)
    count = 1
    for values in keys.values():
        count *= len(values)
    if count > MAX_CELLS:
        raise ConfigError(f"{source}: sweep: {count} cells; expected at most {MAX_CELLS}")
    cells = [Cell(tuple(zip(keys, combo, strict=True))) for combo in itertools.product(*keys.values())]
    labels = [c.folder for c in cells]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{source}: sweep: two cells would have the same name; expected distinct values")
    return cells


def parse_sweep_option(item: str) -> tuple[str, list[Any]]:
    """``--sweep KEY=V1,V2,...``: the key path and its values (each read as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key or not raw:
        raise ConfigError(f"--sweep {item}: expected KEY.PATH=V1,V2,..., e.g. seed=0,1,2")
    parts, depth, current = [], 0, ""
    for ch in raw:  # split on commas outside brackets and braces
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    try:
        return key, [yaml.safe_load(p) if p.strip() else "" for p in parts]
    except yaml.YAMLError:
        raise ConfigError(f"--sweep {item}: a value is not valid YAML") from None
