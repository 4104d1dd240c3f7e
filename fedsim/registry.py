"""Name -> component registries.

A registry is a dict with a decorator. Scenarios name components; ``fedsim list``
prints them. Duplicate registrations and unknown names fail loudly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from fedsim.config import NoParams
from fedsim.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component: the object, its parameter model and a summary."""

    name: str
    obj: T
    params: type[BaseModel]
    summary: str


@dataclass
class Registry(Generic[T]):
    """A named table of components of one kind (``kind`` is used in messages)."""

    kind: str
    _entries: dict[str, Entry[T]] = field(default_factory=dict)

    def register(self, name: str, params: type[BaseModel] = NoParams, summary: str = "") -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` with its parameter model."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = summary or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
            self._entries[name] = Entry(name, obj, params, doc)
            return obj

        return deco

    def entry(self, name: str) -> Entry[T]:
        """The entry registered as ``name``; a UserError listing the known names."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UserError(f"unknown {self.kind} {name!r}; expected one of: {known}") from None

    def get(self, name: str) -> T:
        """The component registered as ``name``."""
        return self.entry(name).obj

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())

    def params_of(self, name: str, values: dict[str, Any]) -> BaseModel:
        """Validate ``values`` against the parameter model of ``name``."""
        return self.entry(name).params.model_validate(values)
