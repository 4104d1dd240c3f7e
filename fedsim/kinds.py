"""The kinds of experiment file, and ``fedsim validate`` for each.

A file names its kind with ``kind:`` at the top: ``fl`` (a federated-learning scenario,
the default when the key is absent), ``bottlefit`` (a BottleFit split-computing
experiment, ``fedsim edge train``) or ``edge-bench`` (local vs offload vs split,
``fedsim edge bench``). Each kind registers the schema that validates it and a check
that loads it (the edge kinds are registered by ``edge.cli``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from fedsim.errors import UserError
from fedsim.registry import Registry
from fedsim.scenario import Scenario, load_scenario, read_yaml

#: The kind of a file without ``kind:``.
DEFAULT_KIND = "fl"


@dataclass(frozen=True)
class FileKind:
    """A kind of experiment file: its top-level schema (imported when needed), and a check
    that loads a file of the kind and returns one summary line."""

    schema: Callable[[], type[BaseModel]]
    check: Callable[[Path, list[str]], str]
    command: str


KINDS: Registry[FileKind] = Registry("kind of file")


def kind_of(raw: dict, source: str) -> str:
    """The ``kind:`` of a file's mapping (``fl`` when absent), checked against the registry."""
    kind = raw.get("kind", DEFAULT_KIND)
    if not isinstance(kind, str) or kind not in KINDS:
        raise UserError(f"{source}: kind: unknown kind {kind!r}; expected one of: {', '.join(KINDS.names())}")
    return kind


def _other_kind(raw: dict, kind: str) -> str | None:
    """Another kind whose schema has every top-level key of ``raw`` (where the file's has not)."""
    keys = set(raw)
    if keys <= set(KINDS.get(kind).schema().model_fields):
        return None
    fits = [e.name for e in KINDS if e.name != kind and keys <= set(e.obj.schema().model_fields)]
    return fits[0] if fits else None


def validate_file(path: Path, overrides: list[str]) -> str:
    """Validate a file of any kind; the line ``fedsim validate`` prints."""
    raw = read_yaml(path)
    kind = kind_of(raw, str(path))
    try:
        return KINDS.get(kind).check(path, overrides)
    except UserError:
        other = None if "kind" in raw else _other_kind(raw, kind)
        if other is None:
            raise
        raise UserError(
            f"{path}: its keys are those of a {other} file; add 'kind: {other}' at the top "
            f"(a file without kind: is read as kind {DEFAULT_KIND})"
        ) from None


def require_kind(path: Path, kind: str, default: bool = False) -> None:
    """A one-line error when the file at ``path`` declares another kind than ``kind``,
    naming the command that runs it. A file without ``kind:`` is taken to be of ``kind``
    by the command it is given to, unless ``default`` (then it is of kind fl)."""
    if not path.is_file():
        return  # the loader says so, with what it expected
    raw = read_yaml(path)
    if "kind" not in raw and not default:
        return
    found = kind_of(raw, str(path))
    if found != kind:
        raise UserError(f"{path} is of kind {found}; run it with '{KINDS.get(found).command} {path}'")


def _check_fl(path: Path, overrides: list[str]) -> str:
    from fedsim.workspace import federated_data

    sc = load_scenario(path, overrides)
    fed = federated_data(sc)
    return (
        f"{path}: {sc.algorithm.name} on {sc.data.dataset} "
        f"({len(fed.dataset.y_train)} training samples) over {sc.clients.num} clients, "
        f"{sc.clients.per_round()} per round, {sc.rounds} rounds, runtime {sc.runtime.name}"
    )


KINDS.register("fl", summary="federated-learning scenario (fedsim run)")(
    FileKind(lambda: Scenario, _check_fl, "fedsim run")
)
