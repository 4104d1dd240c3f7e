"""Every experiment file's schema: a leaf of fedsim, importing nothing of it but its errors.

Import from this package, not from its modules: a module of a package that is being
imported by another thread (Flower loads the ServerApp and ClientApp side by side) can
deadlock the import.

A file names its kind with ``kind:`` (``fl`` when absent): a federated-learning scenario
(:class:`Scenario`), a BottleFit experiment (:class:`Experiment`) or an edge bench
(:class:`Bench`), validated as one discriminated union (:func:`parse`). Specs they share
(a dataset, an output folder, a network link) are defined once (:mod:`.common`). Reading
files, ``base:`` and overrides: :mod:`.files`; sweeps: :mod:`.sweep`. The registries'
checks of named components (datasets, models, algorithms, profiles...) happen above, in
:mod:`fedsim.loader`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from fedsim.config.base import NAME_PATTERN, Component, Document, NoParams, Params, Strict
from fedsim.config.bench import (
    METER,
    REQUESTS,
    WARMUP,
    WORKER,
    Bench,
    BenchModelSpec,
    ServerSpec,
    TimingSpec,
    WorkerSettings,
)
from fedsim.config.bottlefit import Experiment, ImageDataSpec
from fedsim.config.common import DatasetSpec, LinkSpec, OutputSpec
from fedsim.config.faults import CorruptFault, FaultRate, FaultsSpec, HangFault
from fedsim.config.files import (
    ConfigError,
    apply_overrides,
    format_validation_error,
    read_document,
    read_yaml,
)
from fedsim.config.fl import (
    OptimizerSpec,
    RoundPolicySpec,
    Scenario,
    SplitPlanSpec,
    SystemSpec,
    names_a_file,
    scenario_from_json,
)

#: The kind of a file without ``kind:``.
DEFAULT_KIND = "fl"
#: Each kind's schema.
SCHEMAS: dict[str, type[Document]] = {"fl": Scenario, "bottlefit": Experiment, "edge-bench": Bench}

AnyFile = Annotated[Scenario | Experiment | Bench, Field(discriminator="kind")]
_ANY = TypeAdapter(AnyFile)


def kind_of(raw: dict[str, Any], source: str) -> str:
    """The ``kind:`` of a file's mapping (``fl`` when absent)."""
    kind = raw.get("kind", DEFAULT_KIND)
    if not isinstance(kind, str) or kind not in SCHEMAS:
        raise ConfigError(
            f"{source}: kind: unknown kind {kind!r}; expected one of: {', '.join(sorted(SCHEMAS))}"
        )
    return kind


def parse(raw: dict[str, Any], source: str, context: dict[str, Any] | None = None) -> Document:
    """Validate a file's mapping against the schema of its kind (one line per problem)."""
    kind = kind_of(raw, source)
    try:
        return _ANY.validate_python({**raw, "kind": kind}, context=context)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, SCHEMAS[kind], tagged=True)) from None


__all__ = [
    "DEFAULT_KIND",
    "METER",
    "NAME_PATTERN",
    "REQUESTS",
    "SCHEMAS",
    "WARMUP",
    "WORKER",
    "Bench",
    "BenchModelSpec",
    "Component",
    "ConfigError",
    "CorruptFault",
    "DatasetSpec",
    "Document",
    "Experiment",
    "FaultRate",
    "FaultsSpec",
    "HangFault",
    "ImageDataSpec",
    "LinkSpec",
    "NoParams",
    "OptimizerSpec",
    "OutputSpec",
    "Params",
    "RoundPolicySpec",
    "Scenario",
    "ServerSpec",
    "SplitPlanSpec",
    "Strict",
    "SystemSpec",
    "TimingSpec",
    "WorkerSettings",
    "apply_overrides",
    "format_validation_error",
    "kind_of",
    "names_a_file",
    "parse",
    "read_document",
    "read_yaml",
    "scenario_from_json",
]
