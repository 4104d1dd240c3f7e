"""Mutated copies of every shipped scenario never produce a traceback.

A seeded generator writes, from each file in ``scenarios/``, copies with one thing wrong:
a value of the wrong type, a non-finite or out-of-range number, a deleted or an unknown
key; and whole-file damage: truncated, binary, empty, a list, an alias bomb, deep
nesting. ``fedsim validate`` on each (the console script's entry point, in this process)
must exit with 0 or 2, print at most 3 lines, print no traceback, and finish within
seconds. A few of the cases also go through the real command line.
"""

from __future__ import annotations

import copy
import io
import sys
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fedsim.cli import main
from tests.helpers import cli

ROOT = Path(__file__).parents[1]
SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))
#: Mutations of single values per shipped file, drawn from its seed.
PER_FILE = 16
#: Replacement values: wrong types, non-finite and out-of-range numbers.
BAD_VALUES: list[Any] = [
    "text",
    [1, "a"],
    {"nested": 1},
    True,
    None,
    float("inf"),
    float("-inf"),
    float("nan"),
    -1,
    0,
    -1e12,
    10**12,
    2**70,
    1e400,
    "",
]
SECONDS_PER_CASE = 15.0


def leaves(node: Any, path: tuple = ()) -> Iterator[tuple]:
    """Paths to every value of a mapping (lists by index)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            yield from leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*path, i)
            yield from leaves(value, (*path, i))


def _parent(doc: Any, path: tuple) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


def value_mutations(raw: dict, rng: np.random.Generator) -> Iterator[tuple[str, str]]:
    """(label, YAML text) of copies of ``raw`` with one value replaced, deleted or one key added."""
    paths = list(leaves(raw))
    for _ in range(PER_FILE):
        path = paths[int(rng.integers(len(paths)))]
        doc = copy.deepcopy(raw)
        parent = _parent(doc, path)
        how = int(rng.integers(3))
        if how == 0:
            value = BAD_VALUES[int(rng.integers(len(BAD_VALUES)))]
            parent[path[-1]] = value
            label = f"{'.'.join(map(str, path))} = {value!r}"
        elif how == 1 and isinstance(parent, dict):
            del parent[path[-1]]
            label = f"{'.'.join(map(str, path))} deleted"
        else:
            target = parent if isinstance(parent, dict) else doc
            target["no_such_key"] = 1
            label = f"unknown key beside {'.'.join(map(str, path))}"
        yield label, yaml.safe_dump(doc, sort_keys=False)


def file_mutations(text: str, rng: np.random.Generator) -> Iterator[tuple[str, str | bytes]]:
    """(label, content) of whole-file damage."""
    for frac in (0.1, 0.37, 0.5, 0.83):
        cut = int(len(text) * frac)
        yield f"truncated at {cut}", text[:cut]
    yield "binary", rng.integers(0, 256, 512, dtype=np.uint8).tobytes()
    yield "latin-1", text.encode("utf-8") + b"\n# \xe9t\xe9\xff\n"
    yield "empty", ""
    yield "a list", "- 1\n- 2\n"
    yield "a scalar", "42\n"
    yield "tabs", "name:\tx\n\trounds: 3\n"
    yield "deep nesting", "name: " + "[" * 5000 + "]" * 5000 + "\n"
    yield "deep mappings", "name: x\n" + "".join(" " * i + "a:\n" for i in range(200)) + " " * 200 + "b: 1\n"
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        bomb.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]")
    yield "alias bomb", "\n".join(bomb) + "\nname: x\nrounds: 1\ndata: {options: {x: *i}}\n"
    yield "date and binary values", "name: x\nrounds: 2024-01-01\nseed: !!binary aGVsbG8=\n"
    yield "duplicate and odd keys", "name: x\nname: y\n1: 2\n? [a, b]\n: c\nrounds: 3\n"
    yield "huge number", "name: x\nrounds: 1" + "0" * 5000 + "\n"


def validate(path: Path) -> tuple[int, str, float]:
    """(exit code, what was printed, seconds) of ``fedsim validate PATH`` in this process."""
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    code: int | None = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(["validate", str(path)])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return int(code or 0), out.getvalue() + err.getvalue(), time.monotonic() - t0


def cases(tmp: Path) -> Iterator[tuple[str, Path]]:
    for n, file in enumerate(SHIPPED):
        text = file.read_text()
        rng = np.random.default_rng([n, 0xF022])
        raw = yaml.safe_load(text)
        for k, (label, content) in enumerate([*value_mutations(raw, rng), *file_mutations(text, rng)]):
            path = tmp / file.stem / f"case-{k:02d}.yaml"
            path.parent.mkdir(exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
            yield f"{file.name}: {label}", path


@pytest.mark.slow
def test_mutated_scenarios_never_give_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # edge benches name their model relative to the file; data as shipped
    tried, exits, bad = 0, {0: 0, 2: 0}, []
    for label, path in cases(tmp_path):
        code, printed, seconds = validate(path)
        tried += 1
        lines = printed.strip().splitlines()
        if code in exits:
            exits[code] += 1
        if code not in exits or len(lines) > 3 or "Traceback" in printed or seconds > SECONDS_PER_CASE:
            bad.append(f"{label}: exit {code}, {len(lines)} lines, {seconds:.1f} s\n{printed[-600:]}")
    print(f"{tried} mutated scenarios: {exits[0]} valid, {exits[2]} refused in one line or few, 0 tracebacks")
    assert not bad, f"{len(bad)} of {tried} cases misbehaved:\n" + "\n".join(
        dict.fromkeys(b.split(": ", 1)[1] for b in bad)
    )
    assert tried >= len(SHIPPED) * (PER_FILE + 15)
    assert exits[2] > exits[0] > 0  # mostly refused, but some mutations stay valid (a deleted default)
    assert sys.getrecursionlimit() < 5000  # deep nesting really is deeper than the parser can recurse


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("name: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
        (
            "name: x\nrounds: 3\ntrain: {optimizer: {lr: .inf}}\n",
            "train.optimizer.lr: Input should be a finite number",
        ),
        (b"\x00\xff\xfe binary", "not a text file; expected YAML in UTF-8"),
    ],
)
def test_worst_cases_through_the_real_command_line(
    tmp_path: Path, content: str | bytes, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    res = cli("validate", str(path))
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and expected in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
