"""The schema of an edge bench (``kind: edge-bench``; ``fedsim edge bench``): local computing vs
edge offloading vs split computing, for every device x network x bottleneck C."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from fedsim.config.base import NAME_PATTERN, Document, Strict
from fedsim.config.common import LinkSpec, OutputSpec

#: A registered network profile's name (wifi, lte, 3g; none: no shaping), or a link of one's own.
Network = Annotated[
    Annotated[str, Tag("name")] | Annotated[LinkSpec, Tag("link")],
    Discriminator(lambda v: "name" if isinstance(v, str) else "link"),
]
#: What the adaptive worker minimises per request.
Objective = Literal["latency", "energy"]
#: Power meters (fedsim.edge.power.METERS, and ``auto``: the best one this machine has).
Meter = Literal["auto", "model", "rapl", "jtop", "ina219", "nvml", "csv"]


class WorkerSettings(Strict):
    """How each worker run measures: the one place of these defaults, shared by bench files
    (:class:`Bench`), ``fedsim edge worker`` and ``fedsim.edge.worker.WorkerConfig``.

    The meter's default is the profile's power model: it works on every machine and for
    emulated devices.
    """

    requests: int = Field(100, ge=1)
    warmup: int = Field(5, ge=0)
    meter: Meter = "model"
    meter_period_s: float = Field(0.1, gt=0)
    jpeg_quality: int = Field(90, ge=1, le=100)
    stream: bool = False
    threads: int = Field(1, ge=1, description="onnxruntime threads on the (emulated) device")
    timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(8, ge=0)
    backoff_s: float = Field(0.05, gt=0)
    max_backoff_s: float = Field(2.0, gt=0)
    objective: Objective = Field("latency", description="what the adaptive mode minimises per request")
    probe_s: float = Field(
        5.0, gt=0, description="adaptive mode: probe the link after this long without a remote request"
    )
    probe_bytes: int = Field(8192, ge=1, description="adaptive mode: the padded probe's payload")


#: The worker defaults (see :class:`WorkerSettings`).
WORKER = WorkerSettings()
#: Measured requests, unmeasured ones before them, and the meter of a worker run (aliases of
#: :data:`WORKER`'s).
REQUESTS = WORKER.requests
WARMUP = WORKER.warmup
METER: Meter = WORKER.meter


def _worker_field(name: str) -> Any:
    """A bench field declared as :class:`WorkerSettings` declares it (default and limits)."""
    return copy.copy(WorkerSettings.model_fields[name])


class TimingSpec(Strict):
    """An untrained ImageNet-size model, for latency and energy only (accuracy is meaningless).

    Latency and energy do not depend on the weights, so a randomly initialised ResNet
    with a BottleFit bottleneck shows where split computing pays off at the scale the
    paper measured, without training it here.
    """

    arch: Literal["resnet18", "resnet50", "resnet152"] = "resnet18"
    image_size: int = Field(224, ge=32, le=512)
    split: Literal["layer1", "layer2", "layer3"] = "layer2"
    channels: list[int] = Field(default_factory=lambda: [12], min_length=1)
    num_classes: int = Field(10, ge=2)
    test_images: int = Field(50, ge=10)


class BenchModelSpec(Strict):
    """Where the served model comes from: exactly one of ``onnx``, ``run``, ``train``, ``timing``."""

    onnx: Path | None = Field(None, description="an ONNX folder written by fedsim edge export")
    run: Path | None = Field(None, description="an edge run folder (exported on first use)")
    train: Path | None = Field(None, description="an edge experiment file, trained once and cached")
    set: list[str] = Field(default_factory=list, description="KEY=VALUE overrides of the experiment")
    timing: TimingSpec | None = Field(None, description="an untrained model for latency and energy only")

    @model_validator(mode="after")
    def _one_source(self) -> BenchModelSpec:
        given = [k for k in ("onnx", "run", "train", "timing") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"expected exactly one of onnx, run, train, timing; got {', '.join(given) or 'none'}"
            )
        return self


class ServerSpec(Strict):
    """The tail server the bench starts."""

    device: str = "gpu-server"
    workers: int = Field(2, ge=1)
    threads: int = Field(1, ge=1)
    max_message_bytes: int = Field(4 << 20, ge=1024)


def _all_modes() -> list[Literal["local", "offload", "split", "adaptive"]]:
    return ["local", "offload", "split"]


def _latency_only() -> list[Objective]:
    return ["latency"]


def _default_networks() -> list[Network]:
    return ["wifi", "lte", "3g"]


class Bench(Document):
    """A bench file; see the module docstring."""

    kind: Literal["edge-bench"] = Field("edge-bench", description="the kind of file: an edge bench")
    name: str = Field(pattern=NAME_PATTERN)
    seed: int = 0
    model: BenchModelSpec
    server: ServerSpec = ServerSpec()
    modes: list[Literal["local", "offload", "split", "adaptive"]] = Field(
        default_factory=_all_modes, min_length=1
    )
    devices: list[str] = Field(default_factory=lambda: ["jetson-nano", "rpi4"], min_length=1)
    networks: list[Network] = Field(
        default_factory=_default_networks,
        description="registered profile names (fedsim.system.profiles) or links of one's own",
    )
    traces: list[str] = Field(
        default_factory=list,
        description="bandwidth traces (shipped names or CSV files) the remote modes also run on",
    )
    trace_interval_s: float = Field(
        1.0,
        gt=0,
        description="on a trace, a request every this many trace seconds: one pass over the trace",
    )
    objectives: list[Objective] = Field(
        default_factory=_latency_only, min_length=1, description="what each adaptive run minimises"
    )
    bottlenecks: list[int] | None = Field(None, description="C values to run (default: every served C)")
    requests: int = _worker_field("requests")
    warmup: int = _worker_field("warmup")
    meter: Meter = _worker_field("meter")
    meter_period_s: float = _worker_field("meter_period_s")
    jpeg_quality: int = _worker_field("jpeg_quality")
    stream: bool = _worker_field("stream")
    threads: int = _worker_field("threads")
    probe_s: float = _worker_field("probe_s")
    probe_bytes: int = _worker_field("probe_bytes")
    output: OutputSpec = OutputSpec()

    @model_validator(mode="after")
    def _links_for_remote_modes(self) -> Bench:
        if set(self.modes) - {"local"} and not (self.networks or self.traces):
            raise ValueError("the remote modes need a link; expected some networks or traces")
        return self
