"""Values a process builds once from a scenario and then reuses: its only memory between calls.

Each use is a named :class:`Memo` with a size limit. Its key is what the value depends on:
the scenario as JSON (:meth:`fedsim.config.Scenario.to_json`) plus any extra parts, such
as a partition id. The oldest entry goes first when a memo is full. :func:`clear` drops
every memo's values (tests, or a process that moves on to other runs); :data:`MEMOS` lists
them all.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Memo(Generic[V]):
    """One named table of built values, key -> value, at most ``maxsize`` of them."""

    def __init__(self, name: str, maxsize: int) -> None:
        self.name = name
        self.maxsize = maxsize
        self._values: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], V]) -> V:
        """The value stored under ``key``; ``build()`` it first when there is none."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = build()  # outside the lock: a build may use other memos
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.maxsize:
                self._values.popitem(last=False)
        return value

    def clear(self) -> None:
        """Drop every value."""
        with self._lock:
            self._values.clear()

    def __len__(self) -> int:
        return len(self._values)


#: Every memo of the process, by name.
MEMOS: dict[str, Memo[object]] = {}


def memo(name: str, maxsize: int) -> Memo[V]:
    """A new memo, listed in :data:`MEMOS` under ``name`` (each name once)."""
    if name in MEMOS:
        raise ValueError(f"memo {name!r} exists twice")
    table: Memo[V] = Memo(name, maxsize)
    MEMOS[name] = table  # type: ignore[assignment]  # Memo is invariant in V; stored only to be cleared
    return table


def clear() -> None:
    """Drop the values of every memo."""
    for table in MEMOS.values():
        table.clear()
