"""Check the components a file names against their registries (the loader's second pass).

The schema (:mod:`fedsim.config`) checks structure; here every named dataset,
partitioner, model, algorithm, runtime, device and network profile must exist and
accept its parameters. Each problem is one line ``SOURCE: key.path: ...``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from fedsim.config import Bench, ConfigError, Experiment, Scenario, format_validation_error, names_a_file
from fedsim.errors import UserError
from fedsim.registry import Registry

#: Network names that mean "no shaping" (the edge worker's default).
NO_SHAPING = ("none", "loopback")


def check_named(
    registry: Registry[Any], name: str, params: dict[str, Any], source: str, at: str, name_at: str
) -> None:
    """``name`` must be registered and accept ``params`` (errors name ``name_at`` / ``at``)."""
    if name not in registry:
        known = ", ".join(registry.names())
        raise ConfigError(f"{source}: {name_at}: unknown {registry.kind} {name!r}; expected one of: {known}")
    model: type[BaseModel] = registry.entry(name).params
    try:
        model.model_validate(params)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, model, prefix=at)) from None


def _profile(registry: Registry[Any], name: str, source: str, at: str, extra: tuple[str, ...] = ()) -> None:
    if name not in registry and name.lower() not in extra:
        known = ", ".join([*registry.names(), *extra])
        raise ConfigError(f"{source}: {at}: unknown {registry.kind} {name!r}; expected one of: {known}")


def check_scenario(scenario: Scenario, source: str) -> None:
    """Every named component of an FL scenario, its device and network profiles, its trace."""
    from fedsim.algorithms import ALGORITHMS, cohort_plan
    from fedsim.data import DATASETS, PARTITIONERS
    from fedsim.models import MODELS
    from fedsim.runtimes import RUNTIMES
    from fedsim.system.availability import read_trace
    from fedsim.system.profiles import DEVICES, NETWORKS

    data = scenario.data
    check_named(DATASETS, data.dataset, data.options, source, "data.options", "data.dataset")
    part = data.partition
    check_named(PARTITIONERS, part.name, part.params, source, "data.partition", "data.partition.name")
    check_named(MODELS, scenario.model.name, scenario.model.params, source, "model", "model.name")
    _check_pretrained(scenario, source)
    algo = scenario.algorithm
    check_named(ALGORITHMS, algo.name, algo.params, source, "algorithm", "algorithm.name")
    check_named(RUNTIMES, scenario.runtime.name, {}, source, "runtime", "runtime.name")
    from fedsim.devices import resolve as resolve_device

    try:
        resolve_device(scenario.train.device)
    except UserError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if scenario.train.vectorise == "on":
        try:
            cohort_plan(scenario)
        except UserError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    system = scenario.system
    if system is None:
        return
    for i, entry in enumerate(system.mix):
        _profile(DEVICES, entry.device, source, f"system.mix.{i}.device")
        _profile(NETWORKS, entry.network, source, f"system.mix.{i}.network")
    if system.split_plan is not None:
        _profile(DEVICES, system.split_plan.server, source, "system.split_plan.server")
    if system.availability.model == "trace":
        try:
            read_trace(system.availability.trace, scenario.clients.num)  # type: ignore[arg-type]  # set: the schema requires it for "trace"
        except UserError as exc:
            raise ConfigError(f"{source}: system.availability.trace: {exc}") from None


def _check_pretrained(scenario: Scenario, source: str) -> None:
    """The checkpoint exists (or its catalog name is installed); its format and layout are known."""
    from fedsim.data.datasets import load_dataset
    from fedsim.models import build_model
    from fedsim.pretrained import CATALOG, LAYOUTS, format_of, resolve, start_from

    spec = scenario.model
    if spec.pretrained is None:
        for key in ("format", "layout"):
            if spec.checkpoint_option(key) is not None:
                raise ConfigError(f"{source}: model.{key}: only used with model.pretrained")
        return
    try:
        if not names_a_file(spec.pretrained) and spec.pretrained not in CATALOG:
            raise UserError(
                f"unknown pretrained name {spec.pretrained!r}; expected a checkpoint file or one of: "
                + ", ".join(CATALOG)
            )
        path = resolve(spec.pretrained)
        if not path.is_file():
            raise UserError(
                f"{str(path)!r} does not exist; expected a checkpoint file or one of the names "
                "of 'fedsim list pretrained'"
            )
        fmt, layout = spec.checkpoint_option("format"), spec.checkpoint_option("layout")
        format_of(path, fmt)
        if layout is not None:
            LAYOUTS.entry(layout)
        # the file fits the model at the dataset's input size (memoised: the run reuses it)
        ds = load_dataset(scenario.data.dataset, scenario.data.options, scenario.seed)
        model = build_model(spec.name, spec.params, ds.input_shape, ds.num_classes, scenario.seed)
        start_from(model.features, spec.name, spec.params, ds.input_shape, spec.pretrained, fmt, layout)
    except UserError as exc:
        raise ConfigError(f"{source}: model.pretrained: {exc}") from None


def check_experiment(exp: Experiment, source: str) -> None:
    """A BottleFit experiment's dataset and its options."""
    from fedsim.data import DATASETS

    check_named(DATASETS, exp.data.dataset, exp.data.options, source, "data.options", "data.dataset")


def check_bench(bench: Bench, source: str) -> None:
    """An edge bench's device and network profiles."""
    from fedsim.system.profiles import DEVICES, NETWORKS

    for i, device in enumerate(bench.devices):
        _profile(DEVICES, device, source, f"devices.{i}")
    _profile(DEVICES, bench.server.device, source, "server.device")
    for i, net in enumerate(bench.networks):
        if isinstance(net, str):
            _profile(NETWORKS, net, source, f"networks.{i}", NO_SHAPING)
