"""Runtimes: the same ServerApp and ClientApp, executed three ways."""

from fedsim.runtimes.registry import RUNTIMES, LaunchRequest

from fedsim.runtimes import deployment, inprocess_launch, ray_launch  # noqa: F401  isort: skip

__all__ = ["RUNTIMES", "LaunchRequest"]
