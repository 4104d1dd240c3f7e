"""Reading experiment files: YAML with one-line errors, ``base:`` files, ``--set`` overrides.

Nothing here knows a schema's meaning: :func:`read_document` returns the mapping a file
describes (its ``base:`` chain merged, the overrides applied) and the name that error
messages use; the loader above validates it.

``base: other.yaml`` (relative to the file) starts from that file's mapping: mappings are
merged key by key, any other value (a list, a number) replaces the base's, and ``null``
removes a key the base sets. A base may have a base; a cycle or a missing file is a
one-line error.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fedsim.config.base import MAX_DEPTH, MAX_ERROR_LINES, MAX_VALUES
from fedsim.errors import ConfigError

# ---------------------------------------------------------------------------- errors


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


def _describe(err: Mapping[str, Any], model: type[BaseModel], prefix: str) -> str:
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
    exc: ValidationError, source: str, model: type[BaseModel], prefix: str = "", tagged: bool = False
) -> str:
    """Turn a pydantic error into lines ``SOURCE: key.path: expected ...`` (at most
    :data:`MAX_ERROR_LINES`; the last one then counts the problems left out). ``tagged``:
    the error comes from a discriminated union, whose member tag leads every key path."""
    errors = [{**e, "loc": tuple(e["loc"])[1:]} if tagged else e for e in exc.errors()]
    lines = [f"{source}: {_describe(e, model, prefix)}" for e in errors]
    if len(lines) > MAX_ERROR_LINES:
        more = len(lines) - MAX_ERROR_LINES + 1
        lines = [*lines[: MAX_ERROR_LINES - 1], f"{source}: ... and {more} more problems"]
    return "\n".join(lines)


# ------------------------------------------------------------------------ overrides


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not p for p in key.split(".")):
        raise ConfigError(f"--set {item}: expected KEY.PATH=VALUE, e.g. clients.num=50")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    except RecursionError:
        raise ConfigError(f"--set {item[:60]}: nested too deeply; expected a YAML value") from None
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
                raise ConfigError(f"--set {item}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` on top: mappings merged key by key, other values replaced,
    and a key set to ``null`` removed (so a file can drop what its base sets)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --------------------------------------------------------------------------- reading


def _check_size(raw: Any, source: str) -> None:
    """Refuse structures deeper than :data:`MAX_DEPTH` or larger than :data:`MAX_VALUES`
    values once YAML aliases are expanded (an alias bomb), without recursion."""
    stack, seen = [(raw, 1)], 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if depth > MAX_DEPTH:
            raise ConfigError(
                f"{source}: nested more than {MAX_DEPTH} levels deep; expected an experiment file"
            )
        if seen > MAX_VALUES:
            raise ConfigError(
                f"{source}: more than {MAX_VALUES:,} values once YAML aliases are expanded; "
                "expected an experiment file"
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
                raise ConfigError(
                    f"{source}: nested more than {MAX_DEPTH} levels deep; expected an experiment file"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a scenario file as a mapping, with one-line errors."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; expected a YAML experiment file")
    try:
        text = path.read_text(encoding="utf-8")
        _check_depth(text, str(path))
        raw = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; expected YAML in UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read; expected an experiment file") from None
    except ValueError as exc:  # a value YAML recognises but Python refuses (a 5,000-digit integer)
        raise ConfigError(
            f"{path}: a value cannot be read ({str(exc)[:80]}); expected an experiment file"
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    _check_size(raw, str(path))
    return raw


def resolve_base(raw: dict[str, Any], path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """``raw`` merged over its ``base:`` chain (each base relative to the file naming it)."""
    raw = dict(raw)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base: expected the name of another YAML file, relative to this one")
    here = path.resolve()
    target = (path.parent / base).resolve()
    if target in (*chain, here):
        names = " -> ".join(p.name for p in (*chain, here, target))
        raise ConfigError(f"{path}: base: {base} makes a cycle ({names})")
    if not target.is_file():
        raise ConfigError(f"{path}: base: {base}: no such file; expected a YAML file next to {path.name}")
    return merge(resolve_base(read_yaml(target), target, (*chain, here)), raw)


def read_document(path: Path | str, overrides: list[str] | None = None) -> tuple[dict[str, Any], str]:
    """A file's mapping (its ``base:`` chain merged, ``key.path=value`` overrides applied),
    and the source name that error messages use (the file, plus any overrides)."""
    path = Path(path)
    raw = resolve_base(read_yaml(path), path)
    if not overrides:
        return raw, str(path)
    source = f"{path} (with --set {' '.join(overrides)})"
    raw = apply_overrides(raw, overrides)
    _check_size(raw, source)
    return raw, source
