"""Loading experiment files of every kind: read, validate the schema, check the registries.

A file is read (its ``base:`` chain merged, ``--set`` overrides applied; :mod:`fedsim.config.files`),
validated against the schema of its ``kind:`` (:func:`fedsim.config.parse`), then each
component it names is checked against its registry (:mod:`fedsim.components`). A file
that declares a ``sweep:`` stands for one file per cell of its grid (:mod:`fedsim.config.sweep`).
Every problem is one line (:class:`~fedsim.errors.ConfigError`, exit code 2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from fedsim.components import check_bench, check_experiment, check_scenario
from fedsim.config import (
    Bench,
    Document,
    Experiment,
    NoParams,
    Scenario,
    kind_of,
    parse,
    read_document,
)
from fedsim.config.sweep import Cell, expand, parse_sweep_option
from fedsim.errors import ConfigError, UserError
from fedsim.registry import Registry


@dataclass(frozen=True)
class FileKind:
    """A kind of experiment file: the registries' checks, a one-line summary, and (for kinds
    whose paths are relative to the file) how to make them absolute."""

    check: Callable[[Any, str], None]
    describe: Callable[[Any], str]
    locate: Callable[[Any, Path], Any] | None = None


KINDS: Registry[FileKind] = Registry("kind of file")


def validate(raw: dict[str, Any], source: str, stored: bool = False) -> Document:
    """A file's mapping validated: schema of its kind, then its components.

    ``stored``: the resolved copy kept in a run folder (a checkpoint it names need not
    exist any more; the run keeps its own copy).
    """
    doc = parse(raw, source, context={"stored": stored})
    KINDS.get(doc.kind).check(doc, source)
    return doc


@dataclass(frozen=True)
class FileContents:
    """What a file describes: its mapping (without ``sweep:``), its grid and its source name."""

    path: Path
    raw: dict[str, Any]
    sweep: Any
    source: str

    @property
    def kind(self) -> str:
        return kind_of(self.raw, self.source)

    def cells(self) -> list[Cell]:
        """The grid's cells ([] without a sweep)."""
        return [] if self.sweep is None else expand(self.sweep, self.source)

    def document(self, cell: Cell | None = None) -> Document:
        """The validated document (of one cell of the grid, when given)."""
        raw = self.raw if cell is None else cell.apply(self.raw)
        source = self.source if cell is None else f"{self.source} [{cell.label}]"
        doc = validate(raw, source)
        locate = KINDS.get(doc.kind).locate
        return doc if locate is None else locate(doc, self.path)


def read_file(
    path: Path | str, overrides: list[str] | None = None, sweeps: list[str] | None = None
) -> FileContents:
    """Read a file of any kind: its mapping, its grid (``sweep:`` and ``--sweep KEY=V1,V2``)."""
    path = Path(path)
    raw, source = read_document(path, overrides)
    sweep = raw.pop("sweep", None)
    if sweeps:
        sweep = dict(sweep) if isinstance(sweep, dict) else {}
        for item in sweeps:
            key, values = parse_sweep_option(item)
            sweep[key] = values
        source += f" (with --sweep {' '.join(sweeps)})"
    return FileContents(path, raw, sweep, source)


def load(
    path: Path | str, overrides: list[str] | None = None, kind: str | None = None, implied: bool = False
) -> Document:
    """Load one experiment (not a sweep), of ``kind`` when given. ``implied``: a file
    without ``kind:`` is of ``kind`` (the command it was given to says what it is)."""
    contents = read_file(path, overrides)
    if implied and "kind" not in contents.raw:
        contents.raw["kind"] = kind
    if contents.sweep is not None:
        cells = len(contents.cells())
        raise ConfigError(
            f"{contents.source}: declares a sweep of {cells} cells; run it with 'fedsim run {path}' "
            "(or add --set sweep=null for one run of the file without the grid)"
        )
    found = contents.kind
    if kind is not None and found != kind:
        raise UserError(f"{path} is of kind {found}; run it with 'fedsim run {path}'")
    return contents.document()


def load_scenario(path: Path | str, overrides: list[str] | None = None) -> Scenario:
    """Load an FL scenario (``kind: fl``)."""
    return cast(Scenario, load(path, overrides, "fl"))


def load_experiment(path: Path | str, overrides: list[str] | None = None) -> Experiment:
    """Load a BottleFit experiment: a file without ``kind:`` given to BottleFit is one."""
    return cast(Experiment, load(path, overrides, "bottlefit", implied=True))


def load_bench(path: Path | str, overrides: list[str] | None = None) -> Bench:
    """Load an edge bench: a file without ``kind:`` given to the bench is one."""
    return cast(Bench, load(path, overrides, "edge-bench", implied=True))


def validate_file(path: Path, overrides: list[str], sweeps: list[str] | None = None) -> str:
    """Validate a file of any kind (every cell of a sweep); the line ``fedsim validate`` prints."""
    contents = read_file(path, overrides, sweeps)
    kind = contents.kind
    try:
        cells = contents.cells()
        docs = [contents.document(c) for c in cells] or [contents.document()]
    except UserError:
        other = None if "kind" in contents.raw else _other_kind(contents.raw, kind)
        if other is None:
            raise
        raise UserError(
            f"{path}: its keys are those of a {other} file; add 'kind: {other}' at the top "
            "(a file without kind: is read as kind fl)"
        ) from None
    line = f"{path}: {KINDS.get(kind).describe(docs[0])}"
    if cells:
        keys = ", ".join(f"{k} ({len(v)})" for k, v in _grid_sizes(cells).items())
        line += f"; a sweep of {len(cells)} cells over {keys}"
    return line


def _grid_sizes(cells: list[Cell]) -> dict[str, set[str]]:
    sizes: dict[str, set[str]] = {}
    for cell in cells:
        for key, value in cell.values:
            sizes.setdefault(key, set()).add(repr(value))
    return sizes


def _other_kind(raw: dict[str, Any], kind: str) -> str | None:
    """Another kind whose schema has every top-level key of ``raw`` (where ``kind``'s has not)."""
    from fedsim.config import SCHEMAS

    keys = set(raw)
    if keys <= set(SCHEMAS[kind].model_fields):
        return None
    return next((k for k, s in SCHEMAS.items() if k != kind and keys <= set(s.model_fields)), None)


def require_kind(path: Path, kind: str, default: bool = False) -> None:
    """A one-line error when the file at ``path`` (or its base) declares another kind than
    ``kind``, naming the command that runs it. A file without ``kind:`` is taken to be of
    ``kind`` by the command it is given to, unless ``default`` (then it is of kind fl)."""
    if not path.is_file():
        return  # the loader says so, with what it expected
    contents = read_file(path)
    if "kind" not in contents.raw and not default:
        return
    found = contents.kind
    if found != kind:
        raise UserError(f"{path} is of kind {found}; run it with 'fedsim run {path}'")


# ------------------------------------------------------------------------------ kinds


def _describe_fl(sc: Scenario) -> str:
    from fedsim.workspace import federated_data

    fed = federated_data(sc)
    return (
        f"{sc.algorithm.name} on {sc.data.dataset} "
        f"({len(fed.dataset.y_train)} training samples) over {sc.clients.num} clients, "
        f"{sc.clients.per_round()} per round, {sc.rounds} rounds, runtime {sc.runtime.name}"
    )


def _describe_bottlefit(exp: Experiment) -> str:
    channels = ", ".join(map(str, exp.bottleneck_channels))
    return (
        f"BottleFit on {exp.data.dataset}, teacher {exp.teacher.arch}, split after "
        f"{exp.split}, C in {{{channels}}}, stages {exp.stages()}, codec {exp.codec}"
    )


def _describe_bench(b: Bench) -> str:
    links = f"{len(b.networks)} networks, {b.requests} requests each"
    if b.traces:
        links += f"; {len(b.traces)} traces, a request every {b.trace_interval_s:g} trace seconds"
    return f"edge bench of {', '.join(b.modes)} on {', '.join(b.devices)} x {links}"


def _locate_bench(bench: Bench, path: Path) -> Bench:
    """The bench's model paths, relative to the bench file."""
    model = bench.model
    fixed = {
        k: (path.parent / v if v is not None and not v.is_absolute() else v)
        for k, v in (("onnx", model.onnx), ("run", model.run), ("train", model.train))
    }
    return bench.model_copy(update={"model": model.model_copy(update=fixed)})


KINDS.register("fl", NoParams, "federated-learning scenario")(FileKind(check_scenario, _describe_fl))
KINDS.register("bottlefit", NoParams, "BottleFit experiment (also: fedsim edge train)")(
    FileKind(check_experiment, _describe_bottlefit)
)
KINDS.register("edge-bench", NoParams, "local vs offload vs split bench (also: fedsim edge bench)")(
    FileKind(check_bench, _describe_bench, _locate_bench)
)
