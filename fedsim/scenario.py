"""Scenario files: the pydantic schema, YAML loading, ``--set`` overrides.

A scenario is validated in two passes before anything runs:

1. structure (this module's models: unknown keys, types, ranges);
2. components (each named dataset, partitioner, model, algorithm and runtime
   validates its own parameters against the model it registered).

Every problem becomes one line ``FILE: KEY.PATH: what was expected`` raised as
:class:`ScenarioError`.
"""

from __future__ import annotations

import copy
import json
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedsim.errors import UserError


class ScenarioError(UserError):
    """A scenario file or override that does not validate."""


#: Most lines one validation error prints (the last then counts what was left out).
MAX_ERROR_LINES = 3
#: Deepest nesting a scenario file may have (the deepest schema needs fewer than 10).
MAX_DEPTH = 32
#: Most values a scenario file may hold once YAML aliases are expanded.
MAX_VALUES = 100_000


class Strict(BaseModel):
    """Base of every scenario section: unknown keys are errors; values immutable; floats
    finite (NaN and infinities refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Component(BaseModel):
    """A registered component chosen by ``name``; its other keys are its parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str

    @property
    def params(self) -> dict[str, Any]:
        """The component's parameters (every key but ``name``)."""
        return dict(self.model_extra or {})


class Document(Strict):
    """A validated experiment file, written back resolved (every default filled in)."""

    @cached_property
    def _json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def to_json(self) -> str:
        """Canonical JSON (what runtimes pass around; cached)."""
        return self._json

    def to_yaml(self) -> str:
        """YAML, keys in schema order."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class LongTail(Strict):
    """Long-tailed training set: n_c = n_max * IF^(-c/(C-1))."""

    imbalance_factor: float = Field(ge=1, description="n_max / n_min")


class DataSpec(Strict):
    """Dataset, its options, partition and local test sets."""

    dataset: str = "digits"
    options: dict[str, Any] = Field(default_factory=dict)
    partition: Component = Component(name="iid")
    long_tail: LongTail | None = None
    local_test: bool = True


class ModelSpec(Component):
    """The model: ``name`` plus its parameters."""

    name: str = "cnn"


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

    @field_validator("root_certificates")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Relative to the working directory, stored absolute."""
        return None if value is None else value.expanduser().absolute()


class RuntimeSpec(Strict):
    """Which runtime executes the apps, and its options."""

    name: str = "inprocess"
    ray: RaySpec = RaySpec()
    deployment: DeploymentSpec = DeploymentSpec()


class OutputSpec(Strict):
    """Where the run folder goes and how often it is checkpointed."""

    dir: Path = Path("runs")
    checkpoint_every: int = Field(0, ge=0, description="0: only at the end")


class MixEntry(Strict):
    """A share of the clients on one device profile and one network profile."""

    share: float = Field(gt=0, le=1)
    device: str
    network: str

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        from fedsim.system.profiles import DEVICES

        if value not in DEVICES:
            raise ValueError(f"unknown device profile; expected one of: {', '.join(DEVICES.names())}")
        return value

    @field_validator("network")
    @classmethod
    def _known_network(cls, value: str) -> str:
        from fedsim.system.profiles import NETWORKS

        if value not in NETWORKS:
            raise ValueError(f"unknown network profile; expected one of: {', '.join(NETWORKS.names())}")
        return value


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


class SystemSpec(Strict):
    """Device and network heterogeneity, availability and a round policy (virtual time)."""

    mix: list[MixEntry] = Field(min_length=1)
    compute: Literal["flops", "measured"] = Field(
        "flops", description="flops: counted FLOPs / throughput (deterministic); measured: cpu_s scaled"
    )
    availability: AvailabilitySpec = AvailabilitySpec()
    round: RoundPolicySpec = RoundPolicySpec()

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> SystemSpec:
        total = sum(m.share for m in self.mix)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"mix shares must sum to 1 (they sum to {total:g})")
        return self


class Scenario(Document):
    """One experiment."""

    kind: Literal["fl"] = Field("fl", description="the kind of file: a federated-learning scenario")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, ge=0)
    rounds: int = Field(ge=1)
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    algorithm: AlgorithmSpec = AlgorithmSpec()
    clients: ClientsSpec = ClientsSpec()
    train: TrainSpec = TrainSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    runtime: RuntimeSpec = RuntimeSpec()
    output: OutputSpec = OutputSpec()
    system: SystemSpec | None = None


# --------------------------------------------------------------------------- errors


def _expected_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at the parent of ``loc`` (for 'unknown key' messages)."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        candidates = [ann, *getattr(ann, "__args__", ())]
        sub = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not sub:
            return []
        model = sub[0]
    return sorted(model.model_fields)


def _describe(err: dict[str, Any], model: type[BaseModel], prefix: str) -> str:
    loc = tuple(err["loc"])
    path = ".".join(str(p) for p in (prefix, *loc) if p != "") or "(top level)"
    if err["type"] == "extra_forbidden":
        keys = _expected_keys(model, loc)
        expected = f"; expected one of: {', '.join(keys)}" if keys else ""
        return f"{path}: unknown key{expected}"
    if err["type"] == "missing":
        return f"{path}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {_short(got)})"
    return f"{path}: {msg}{shown}"


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def format_validation_error(
    exc: ValidationError, source: str, model: type[BaseModel], prefix: str = ""
) -> str:
    """Turn a pydantic error into lines ``SOURCE: key.path: expected ...`` (at most
    :data:`MAX_ERROR_LINES`; the last one then counts the problems left out)."""
    lines = [f"{source}: {_describe(e, model, prefix)}" for e in exc.errors()]
    if len(lines) > MAX_ERROR_LINES:
        more = len(lines) - MAX_ERROR_LINES + 1
        lines = [*lines[: MAX_ERROR_LINES - 1], f"{source}: ... and {more} more problems"]
    return "\n".join(lines)


# ------------------------------------------------------------------------ overrides


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not p for p in key.split(".")):
        raise ScenarioError(f"--set {item}: expected KEY.PATH=VALUE, e.g. clients.num=50")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    except RecursionError:
        raise ScenarioError(f"--set {item[:60]}: nested too deeply; expected a YAML value") from None
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``key.path=value`` applied (YAML values)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        path, value = _parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ScenarioError(f"--set {item}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return out


# --------------------------------------------------------------------------- loading


def _check_size(raw: Any, source: str) -> None:
    """Refuse structures deeper than :data:`MAX_DEPTH` or larger than :data:`MAX_VALUES`
    values once YAML aliases are expanded (an alias bomb), without recursion."""
    stack, seen = [(raw, 1)], 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if depth > MAX_DEPTH:
            raise ScenarioError(f"{source}: nested more than {MAX_DEPTH} levels deep; expected a scenario")
        if seen > MAX_VALUES:
            raise ScenarioError(
                f"{source}: more than {MAX_VALUES:,} values once YAML aliases are expanded; "
                "expected a scenario"
            )
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for kv in node.items() for v in kv)
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def _check_depth(text: str, source: str) -> None:
    """Refuse YAML nested deeper than :data:`MAX_DEPTH` before building it (PyYAML's
    composer recurses once per level; its event parser does not)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise ScenarioError(
                    f"{source}: nested more than {MAX_DEPTH} levels deep; expected a scenario"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a scenario file as a mapping, with one-line errors."""
    if not path.is_file():
        raise ScenarioError(f"{path}: no such scenario file; expected a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
        _check_depth(text, str(path))
        raw = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not a text file; expected YAML in UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ScenarioError(f"{path}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise ScenarioError(f"{path}: nested too deeply to read; expected a scenario") from None
    except ValueError as exc:  # a value YAML recognises but Python refuses (a 5,000-digit integer)
        raise ScenarioError(
            f"{path}: a value cannot be read ({str(exc)[:80]}); expected a scenario"
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: expected a mapping of keys at the top level")
    _check_size(raw, str(path))
    return raw


def validate_scenario(raw: dict[str, Any], source: str) -> Scenario:
    """Validate a raw mapping: structure, then every named component's parameters."""
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(exc, source, Scenario)) from None
    from fedsim.components import check_components

    check_components(scenario, source)
    if scenario.system is not None:
        from fedsim.system.clock import check_system

        check_system(scenario, source)
    return scenario


def read_with_overrides(path: Path | str, overrides: list[str] | None = None) -> tuple[dict[str, Any], str]:
    """A YAML file's mapping with ``key.path=value`` overrides applied, and the source
    name that error messages use (the file, plus the overrides when there are any)."""
    path = Path(path)
    raw = read_yaml(path)
    if not overrides:
        return raw, str(path)
    source = f"{path} (with --set {' '.join(overrides)})"
    raw = apply_overrides(raw, overrides)
    _check_size(raw, source)
    return raw, source


def load_scenario(path: Path | str, overrides: list[str] | None = None) -> Scenario:
    """Load, override and validate a scenario file."""
    return validate_scenario(*read_with_overrides(path, overrides))


def scenario_from_json(text: str) -> Scenario:
    """Rebuild a resolved scenario from :meth:`Scenario.to_json` (no re-checks)."""
    return Scenario.model_validate_json(text)
