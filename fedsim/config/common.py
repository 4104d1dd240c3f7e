"""Specs shared by every kind of experiment file: a dataset, an output folder, a network link."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from fedsim.config.base import Strict


class DatasetSpec(Strict):
    """A registered dataset and its loader's options (checked by the dataset, from the loader)."""

    dataset: str
    options: dict[str, Any] = Field(default_factory=dict)


class OutputSpec(Strict):
    """Where run folders go (``OUTPUT/NAME-YYYYmmdd-HHMMSS``)."""

    dir: Path = Path("runs")


class LinkSpec(Strict):
    """A network link of one's own (a registered one is named instead: wifi, lte, 3g)."""

    name: str = Field("custom", min_length=1)
    uplink_mbps: float = Field(gt=0, description="device to server, Mbit/s")
    downlink_mbps: float = Field(gt=0, description="server to device, Mbit/s")
    rtt_ms: float = Field(ge=0, description="round-trip time, ms")
    jitter_ms: float = Field(0.0, ge=0, description="one-way delay varies uniformly by +- this, ms")
    loss: float = Field(0.0, ge=0, lt=1, description="share of packets lost (and sent again)")
