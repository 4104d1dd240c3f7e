"""One worker run's settings (:class:`WorkerConfig`) and the modes.

The defaults shared with bench files and ``fedsim edge worker`` (requests, warm-up, meter,
...) come from :data:`fedsim.config.WORKER` (:class:`~fedsim.config.bench.WorkerSettings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsim.config import WORKER

MODES = ("local", "offload", "split", "adaptive")


@dataclass(frozen=True)
class WorkerConfig:
    """One worker run.

    Attributes
    ----------
    mode : str
        ``local``, ``offload``, ``split``, or ``adaptive`` (per request, the one the planner
        predicts best: :mod:`fedsim.edge.worker.adaptive`).
    server : str, optional
        ``HOST:PORT`` of ``fedsim edge serve`` (required except for ``local`` with ``model_dir``).
    model_dir : Path, optional
        A local ONNX folder (``fedsim edge export``); otherwise models come from the server.
    device : str
        Device profile: its name labels the results and its power coefficients drive the
        ``model`` meter.
    emulate : bool
        Scale device-side times by the profile's calibrated speed (running on this
        machine as that device); False on the real board (``this-host`` never scales).
    trace : str, optional
        A bandwidth trace (shipped name or CSV, :mod:`fedsim.edge.traces`) the shaper replays in
        real time from the worker's start; jitter and loss then come from ``network``, if any.
    interval_s : float, optional
        With a ``trace``: request ``i`` meets the link of trace time ``i * interval_s`` (the
        trace clock jumps to each request's start instead of running on), so every mode sees
        the same link at the same request. ``None``: the trace runs on the wall clock.
    network : str or dict, optional
        Network profile for the shaper (``None``: no shaping).
    channels : int, optional
        Bottleneck width C of the split (default: the smallest served).
    requests, warmup : int
        Measured requests, and unmeasured ones before them on the same channel.
    meter : str
        Power meter (``model``, ``auto``, ``rapl``, ``jtop``, ``ina219``, ``nvml``, ``csv``).
    meter_period_s : float
        Meter sample period.
    meter_csv : Path, optional
        The log for the ``csv`` meter.
    stream : bool
        Use the bidirectional stream instead of unary calls.
    jpeg_quality : int
        JPEG quality in offload mode.
    timeout_s : float
        Deadline of each call.
    retries : int
        Retries of a call that failed with UNAVAILABLE or RESOURCE_EXHAUSTED.
    backoff_s, max_backoff_s : float
        First retry delay (doubling) and its cap.
    seed : int
        Shaper seed.
    threads : int
        onnxruntime intra-op threads on the device.
    objective : str
        What ``adaptive`` minimises: ``latency`` or ``energy``.
    probe_s, probe_bytes : float, int
        ``adaptive``: probe the link after ``probe_s`` seconds without a remote request, with
        an empty and a ``probe_bytes`` call.
    tls_ca : Path, optional
        CA certificate to trust (TLS); ``None``: plaintext.
    token : str, optional
        Bearer token.
    """

    mode: str
    server: str | None = None
    model_dir: Path | None = None
    device: str = "this-host"
    emulate: bool = True
    network: str | dict[str, Any] | None = None
    trace: str | None = None
    interval_s: float | None = None
    channels: int | None = None
    requests: int = WORKER.requests
    warmup: int = WORKER.warmup
    meter: str = WORKER.meter
    meter_period_s: float = WORKER.meter_period_s
    meter_csv: Path | None = None
    stream: bool = WORKER.stream
    jpeg_quality: int = WORKER.jpeg_quality
    timeout_s: float = WORKER.timeout_s
    retries: int = WORKER.retries
    backoff_s: float = WORKER.backoff_s
    max_backoff_s: float = WORKER.max_backoff_s
    seed: int = 0
    threads: int = WORKER.threads
    objective: str = WORKER.objective
    probe_s: float = WORKER.probe_s
    probe_bytes: int = WORKER.probe_bytes
    tls_ca: Path | None = None
    token: str | None = None

    @property
    def network_name(self) -> str:
        """The link's name: a profile name, ``custom`` (a mapping) or ``none`` (no shaping, local mode)."""
        if self.mode != "local" and self.trace:
            return f"trace-{Path(self.trace).stem}"
        if self.mode == "local" or not self.network:
            return "none"
        return self.network if isinstance(self.network, str) else str(self.network.get("name", "custom"))

    def label(self, channels: int | None) -> str:
        """Folder name of this configuration, e.g. ``split-rpi4-wifi-C2``, ``adaptive-rpi4-lte-energy``."""
        suffix = {"split": f"-C{channels}", "adaptive": f"-{self.objective}"}.get(self.mode, "")
        return f"{self.mode}-{self.device}-{self.network_name}{suffix}"
