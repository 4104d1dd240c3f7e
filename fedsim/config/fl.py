"""The schema of a federated-learning scenario (``kind: fl``, the default).

A scenario is validated in two passes before anything runs: structure (these models:
unknown keys, types, ranges), then components (each named dataset, partitioner, model,
algorithm, runtime and device or network profile validates against its registry, in the
loader, :mod:`fedsim.loader`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fedsim.config.base import NAME_PATTERN, Component, Document, Strict
from fedsim.config.common import DatasetSpec, OutputSpec
from fedsim.config.faults import FaultsSpec


class LongTail(Strict):
    """Long-tailed training set: n_c = n_max * IF^(-c/(C-1))."""

    imbalance_factor: float = Field(ge=1, description="n_max / n_min")


class DataSpec(DatasetSpec):
    """Dataset, its options, partition and local test sets."""

    dataset: str = "digits"
    partition: Component = Component(name="iid")
    long_tail: LongTail | None = None
    local_test: bool = True


#: Keys of ``model`` that choose its starting weights rather than its architecture.
PRETRAINED_KEYS = ("pretrained", "format", "layout")


def names_a_file(value: str) -> bool:
    """Whether ``model.pretrained`` is a path (a dot, slash or tilde) rather than a catalog name."""
    return any(c in value for c in "./\\~")


class ModelSpec(Component):
    """The model: ``name`` plus its parameters, and optionally pretrained weights.

    ``pretrained`` is a name of ``fedsim list pretrained`` (a bare word) or a checkpoint
    file (any value with a dot or a slash: relative to the working directory, stored
    absolute); ``format`` and ``layout`` name the file's format and key layout where they
    cannot be inferred. They are not architecture parameters, so they are absent from
    :attr:`params` and only written back when given.
    """

    name: str = "cnn"

    @model_validator(mode="before")
    @classmethod
    def _absolute_checkpoint(cls, data: object) -> object:
        if not isinstance(data, dict) or data.get("pretrained") is None:
            return data
        value = str(data["pretrained"])
        if names_a_file(value):  # a bare word is a catalog name
            value = str(Path(value).expanduser().absolute())
        return {**data, "pretrained": value}

    @property
    def params(self) -> dict[str, Any]:
        """The architecture's parameters (every key but ``name`` and the pretrained keys)."""
        return {k: v for k, v in (self.model_extra or {}).items() if k not in PRETRAINED_KEYS}

    @property
    def pretrained(self) -> str | None:
        """The checkpoint's catalog name or absolute path, if any."""
        value = (self.model_extra or {}).get("pretrained")
        return None if value is None else str(value)

    def checkpoint_option(self, key: str) -> str | None:
        """``format`` or ``layout`` when given."""
        value = (self.model_extra or {}).get(key)
        return None if value is None else str(value)


class AlgorithmSpec(Component):
    """The algorithm: ``name`` plus its parameters."""

    name: str = "fedavg"


class ClientsSpec(Strict):
    """How many clients exist and how many take part in each round."""

    num: int = Field(10, ge=1)
    fraction: float = Field(1.0, gt=0, le=1)
    min: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _min_at_most_num(self) -> ClientsSpec:
        if self.min > self.num:
            raise ValueError(f"min ({self.min}) must be at most num ({self.num})")
        return self

    def per_round(self) -> int:
        """Clients sampled in each training round."""
        return min(self.num, max(self.min, int(self.num * self.fraction)))


class OptimizerSpec(Strict):
    """Client optimiser (fresh every round)."""

    name: str = Field("sgd", pattern="^(sgd|adam)$")
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)


class TrainSpec(Strict):
    """Local training on each client."""

    local_epochs: int = Field(1, ge=1)
    batch_size: int = Field(16, ge=1)
    optimizer: OptimizerSpec = OptimizerSpec()
    vectorise: Literal["off", "on", "auto"] = Field(
        "off", description="train a round's clients as one vectorised cohort (auto: where supported)"
    )
    device: str = Field(
        "cpu",
        pattern=r"^(cpu|auto|mps|cuda(:\d+)?)$",
        description="where local epochs, evaluation and the server's training run: cpu, cuda, cuda:N, "
        "mps, or auto (a CUDA device where there is one)",
    )
    cohort_memory_mb: float = Field(
        1024,
        gt=0,
        description="memory budget of one chunk of a vectorised cohort (weights, optimiser, activations)",
    )

    @field_validator("vectorise", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object) -> object:
        """YAML reads a bare ``off`` / ``on`` as false / true: take them as meant."""
        return {False: "off", True: "on"}.get(value, value) if isinstance(value, bool) else value


class EvaluationSpec(Strict):
    """Evaluation cadence in rounds (0 disables)."""

    server_every: int = Field(1, ge=0)
    clients_every: int = Field(1, ge=0)
    client_fraction: float = Field(1.0, gt=0, le=1)


class RaySpec(Strict):
    """Options of the ``ray`` runtime."""

    address: str | None = Field(None, description="join this Ray cluster; None starts one")
    num_cpus: int = Field(1, ge=1, description="CPUs per client actor (Flower takes whole CPUs)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per client actor")


class DeploymentSpec(Strict):
    """Options of the ``deployment`` runtime (a SuperLink someone runs)."""

    superlink: str | None = Field(None, description="the SuperLink's HOST:PORT (its HTTP API)")
    root_certificates: Path | None = Field(None, description="CA certificate of a TLS SuperLink")
    wait_s: float = Field(
        120.0,
        gt=0,
        description="how long the run waits for clients.num SuperNodes to connect before it fails",
    )

    @field_validator("root_certificates")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Relative to the working directory, stored absolute."""
        return None if value is None else value.expanduser().absolute()


class RuntimeSpec(Strict):
    """Which runtime executes the apps, and its options."""

    name: str = "inprocess"
    workers: int = Field(
        1, ge=0, le=1024, description="workers holding shards of the clients (0: one per CPU; 1: none)"
    )
    engine: Literal["flower", "fedsim"] = Field(
        "flower", description="ray: Flower's Simulation Engine, or fedsim's workers as Ray actors"
    )
    threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="torch threads of each process running clients (0: CPUs shared out among the workers)",
    )
    ray: RaySpec = RaySpec()
    deployment: DeploymentSpec = DeploymentSpec()
    round_deadline_s: float | None = Field(
        None,
        gt=0,
        description="a training round's deadline in real seconds: later replies are discarded (null: none)",
    )

    def exchanges_messages(self) -> bool:
        """Whether messages really travel (Flower's engines): a deadline is then a timeout; on
        fedsim's own grids each reply's reported seconds are judged against it."""
        return self.name == "deployment" or (self.name == "ray" and self.engine == "flower")

    @model_validator(mode="after")
    def _workers_have_an_engine(self) -> RuntimeSpec:
        fedsim_ray = self.name == "ray" and self.engine == "fedsim"
        if self.engine == "fedsim" and self.name != "ray":
            raise ValueError(f"engine fedsim is a choice of the ray runtime, not of {self.name}")
        if self.workers != 1 and self.name != "inprocess" and not fedsim_ray:
            raise ValueError(
                f"workers {self.workers} needs name: inprocess, or ray with engine: fedsim (not {self.name})"
            )
        if self.threads and self.name != "inprocess" and not fedsim_ray:
            raise ValueError(
                f"threads {self.threads} needs name: inprocess, or ray with engine: fedsim (not {self.name})"
            )
        return self


class FLOutputSpec(OutputSpec):
    """Where the run folder goes and how often it is checkpointed."""

    checkpoint_every: int = Field(0, ge=0, description="0: only at the end")


class MixEntry(Strict):
    """A share of the clients on one device profile and one network profile (names checked
    against the profiles by the loader)."""

    share: float = Field(gt=0, le=1)
    device: str
    network: str


class AvailabilitySpec(Strict):
    """When clients are reachable (see :mod:`fedsim.system.availability`)."""

    model: Literal["always", "markov", "trace"] = "always"
    mean_on_s: float | None = Field(None, gt=0, description="markov: mean on-period (virtual s)")
    mean_off_s: float | None = Field(None, gt=0, description="markov: mean off-period (virtual s)")
    trace: Path | None = Field(None, description="trace: CSV partition_id,start_s,end_s")

    @field_validator("trace")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Relative to the working directory, stored absolute (runtimes may run elsewhere)."""
        return None if value is None else value.expanduser().absolute()

    @model_validator(mode="after")
    def _keys_of_model(self) -> AvailabilitySpec:
        needs = {"always": (), "markov": ("mean_on_s", "mean_off_s"), "trace": ("trace",)}
        for key in ("mean_on_s", "mean_off_s", "trace"):
            given = getattr(self, key) is not None
            if given != (key in needs[self.model]):
                verb = "requires" if not given else "does not take"
                raise ValueError(f"availability model {self.model!r} {verb} {key}")
        return self


class RoundPolicySpec(Strict):
    """When a round closes: all sampled clients, a deadline, or the first K of an over-committed cohort."""

    policy: Literal["wait_all", "deadline", "overcommit"] = "wait_all"
    deadline_s: float | None = Field(None, gt=0, description="deadline: seconds after the round starts")
    overcommit: float = Field(1.3, ge=1, description="overcommit: sample ceil(overcommit * K), keep first K")

    @model_validator(mode="after")
    def _deadline_given(self) -> RoundPolicySpec:
        if (self.policy == "deadline") != (self.deadline_s is not None):
            raise ValueError("deadline_s is required by, and only by, policy 'deadline'")
        return self


class SplitPlanSpec(Strict):
    """Per client and round, the split a deployed model would use on the client's device and
    link (``fedsim edge plan``'s choice; see docs/system.md)."""

    model: Literal["resnet18", "resnet50", "resnet152"] = "resnet18"
    size: int = Field(224, ge=32, le=256, description="input side in pixels")
    server: str = Field("gpu-server", description="the server's device profile")
    objective: Literal["latency", "energy"] = "latency"
    jpeg_quality: int = Field(90, ge=1, le=95, description="quality of the offloading candidate")


class SystemSpec(Strict):
    """Device and network heterogeneity, availability and a round policy (virtual time)."""

    mix: list[MixEntry] = Field(min_length=1)
    compute: Literal["flops", "measured"] = Field(
        "flops", description="flops: counted FLOPs / throughput (deterministic); measured: cpu_s scaled"
    )
    availability: AvailabilitySpec = AvailabilitySpec()
    round: RoundPolicySpec = RoundPolicySpec()
    split_plan: SplitPlanSpec | None = None

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> SystemSpec:
        total = sum(m.share for m in self.mix)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"mix shares must sum to 1 (they sum to {total:g})")
        return self


class Scenario(Document):
    """One experiment."""

    kind: Literal["fl"] = Field("fl", description="the kind of file: a federated-learning scenario")
    name: str = Field(pattern=NAME_PATTERN)
    seed: int = Field(0, ge=0)
    rounds: int = Field(ge=1)
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    algorithm: AlgorithmSpec = AlgorithmSpec()
    clients: ClientsSpec = ClientsSpec()
    train: TrainSpec = TrainSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    runtime: RuntimeSpec = RuntimeSpec()
    output: FLOutputSpec = FLOutputSpec()
    system: SystemSpec | None = None
    faults: FaultsSpec = FaultsSpec()

    @model_validator(mode="after")
    def _one_deadline(self) -> Scenario:
        if self.runtime.round_deadline_s is not None and self.system is not None:
            raise ValueError(
                "runtime.round_deadline_s judges real time; with a system: section the round's deadline is "
                "system.round.deadline_s (virtual time)"
            )
        return self

    @model_validator(mode="after")
    def _retry_without_clock(self) -> Scenario:
        if self.faults.on_too_few == "retry" and self.system is not None:
            raise ValueError(
                "faults.on_too_few: retry cannot be used with a system: section (its virtual clock times "
                "one sample per round); expected skip or fail"
            )
        return self


def scenario_from_json(text: str) -> Scenario:
    """Rebuild a resolved scenario from :meth:`Scenario.to_json` (no re-checks)."""
    return Scenario.model_validate_json(text)
