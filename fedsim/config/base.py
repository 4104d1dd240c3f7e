"""The base classes of every experiment file's schema, and the limits on what a file may hold."""

from __future__ import annotations

import json
from functools import cached_property
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict

#: Most lines one validation error prints (the last then counts what was left out).
MAX_ERROR_LINES = 3
#: Deepest nesting a file may have (the deepest schema needs fewer than 10).
MAX_DEPTH = 32
#: Most values a file may hold once YAML aliases are expanded.
MAX_VALUES = 100_000
#: What a ``name`` may look like (it names run folders).
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


class Strict(BaseModel):
    """Base of every section: unknown keys are errors; values immutable; floats finite
    (NaN and infinities refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Params(BaseModel):
    """Base of every component's parameters: unknown keys are errors, values immutable,
    floats finite (NaN and infinities refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class NoParams(Params):
    """Parameters of a component that takes none."""


class Component(BaseModel):
    """A registered component chosen by ``name``; its other keys are its parameters
    (validated by the component's own parameter model, from the loader)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str

    @property
    def params(self) -> dict[str, Any]:
        """The component's parameters (every key but ``name``)."""
        return dict(self.model_extra or {})


class Document(Strict):
    """A validated experiment file, written back resolved (every default filled in)."""

    if TYPE_CHECKING:  # every kind declares these fields (in its own order: the files keep it)
        kind: str
        name: str
        output: Any

    @cached_property
    def _json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def to_json(self) -> str:
        """Canonical JSON (what runtimes pass around; cached)."""
        return self._json

    def to_yaml(self) -> str:
        """YAML, keys in schema order."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
