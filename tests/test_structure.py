"""The code's rooms: no import cycle, modules of a readable size, one installed package."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
#: folder at the repository's root -> the import package it installs as (setup.py's mapping)
FOLDERS = {"fedsim": "fedsim", "clients": "fedsim.clients", "edge": "fedsim.edge"}
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """Every module of the installed package, by its import name."""
    found: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for file in sorted((ROOT / folder).rglob("*.py")):
            parts = list(file.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = file
    return found


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (never executed)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports_of(name: str, file: Path, known: set[str]) -> set[str]:
    """The package's modules that ``file`` imports, at its top or lazily inside a function."""
    tree = ast.parse(file.read_text())
    skip = _type_checking_only(tree)
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in out if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, file, set(mods)) for name, file in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_relative_and_from_imports(tmp_path: Path) -> None:
    file = tmp_path / "m.py"
    file.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import fedsim.t\n"
        "def f():\n    from fedsim.edge import wire\n    from . import b\n    import fedsim.x.y\n"
    )
    known = {"fedsim.edge", "fedsim.edge.wire", "fedsim.edge.b", "fedsim.x.y", "fedsim.t"}
    assert imports_of("fedsim.edge.m", file, known) == {
        "fedsim.edge",
        "fedsim.edge.wire",
        "fedsim.edge.b",
        "fedsim.x.y",
    }


def test_no_import_cycle_in_fedsim_clients_or_edge() -> None:
    graph = import_graph()
    assert len(graph) > 100 and any(graph.values())
    found = cycles(graph)
    assert not found, "import cycles (lazy imports count):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_module_over_the_size_limit() -> None:
    sizes = {str(f.relative_to(ROOT)): len(f.read_text().splitlines()) for f in modules().values()}
    over = {f: n for f, n in sizes.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines; split them by concern: {over}"


def test_clients_never_import_the_server_strategies() -> None:
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("fedsim.clients"):
            assert not {d for d in deps if d.startswith("fedsim.strategies")}, f"{name} imports {deps}"


@pytest.mark.slow
def test_a_wheel_holds_one_top_level_package_with_every_module(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside the sources
    for name in ("fedsim", "clients", "edge"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "-w", str(tmp_path), str(source)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("fedsim-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"fedsim"}
    expected = {
        name.replace(".", "/") + ("/__init__.py" if f.name == "__init__.py" else ".py")
        for name, f in modules().items()
    }
    assert expected <= names, sorted(expected - names)[:5]
    assert "fedsim/edge/proto/inference.proto" in names
    assert not any("__pycache__" in n for n in names)


def test_every_type_ignore_names_its_error_and_says_why() -> None:
    bare = []
    for file in modules().values():
        for number, line in enumerate(file.read_text().splitlines(), 1):
            if "type: ignore" in line and not re.search(r"# type: ignore\[[a-z-, ]+\]\s+#\s*\S", line):
                bare.append(f"{file.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bare, (
        "a type: ignore needs its error code and a reason (`# type: ignore[code]  # why`):\n"
        + "\n".join(bare)
    )
