"""The runtime registry and what a launch receives."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedsim.config import Scenario
from fedsim.registry import Registry

if TYPE_CHECKING:
    from fedsim.runstore import RunFolder


@dataclass(frozen=True)
class LaunchRequest:
    """Everything a runtime needs to run (or resume) one scenario into a run folder."""

    scenario: Scenario
    folder: RunFolder
    resume: bool = False
    callbacks: Sequence[Any] = ()
    stop_after: int | None = None
    verbose: bool = False

    def run_config(self) -> dict[str, Any]:
        """The Flower run config carrying the scenario to the apps."""
        return {
            "scenario": self.scenario.to_json(),
            "run-dir": str(self.folder.path.resolve()),
            "resume": self.resume,
            "stop-after": self.stop_after or 0,
        }


Launcher = Callable[[LaunchRequest], None]

RUNTIMES: Registry[Launcher] = Registry("runtime")
