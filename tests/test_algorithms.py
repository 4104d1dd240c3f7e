"""One registration per algorithm: both halves and the parameters, checked against each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import BaseModel

from fedsim.algorithms import ALGORITHMS, Algorithm, Command, commands
from fedsim.clients.common import ClientAlgorithm

ROOT = Path(__file__).parents[1]
NAMES = {
    "fedavg",
    "fedprox",
    "fedloge",
    "creamfl",
    "pfedpg",
    "pfedpg_base",
    "fedvpt",
    "vpt_local",
    "vpt_head",
}


def _imported_modules(file: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function (relative ones resolved)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(["fedsim", "clients", *([base] if base else [])])
            out |= {base, *(f"{base}.{a.name}" for a in node.names)}
    return out


def test_every_algorithm_has_both_halves_and_its_parameters() -> None:
    assert set(ALGORITHMS.names()) >= NAMES
    for entry in ALGORITHMS:
        algorithm = entry.obj
        assert isinstance(algorithm, Algorithm) and algorithm.name == entry.name
        assert callable(algorithm.strategy), entry.name
        assert isinstance(algorithm.client, ClientAlgorithm), entry.name
        assert callable(algorithm.client.train) and callable(algorithm.client.evaluate), entry.name
        assert issubclass(algorithm.params, BaseModel) and entry.params is algorithm.params
        assert entry.summary == algorithm.summary != ""


def test_an_algorithm_is_registered_once() -> None:
    from fedsim.algorithms import register

    with pytest.raises(ValueError, match="registered twice"):
        register(ALGORITHMS.get("fedavg"))


@pytest.mark.parametrize("file", sorted((ROOT / "clients").rglob("*.py")), ids=lambda f: f.name)
def test_clients_never_import_the_server_strategies(file: Path) -> None:
    imported = _imported_modules(file)
    assert not {m for m in imported if m == "fedsim.strategies" or m.startswith("fedsim.strategies.")}, file


def test_the_import_check_sees_every_form(tmp_path: Path) -> None:
    file = tmp_path / "m.py"
    file.write_text("def f():\n    from fedsim.strategies import pfedpg\nimport fedsim.strategies.base\n")
    assert {"fedsim.strategies", "fedsim.strategies.pfedpg", "fedsim.strategies.base"} <= _imported_modules(
        file
    )


def test_algorithm_verbs_are_mounted_once() -> None:
    from fedsim.cli import app

    verbs = commands()
    assert [c.name for c in verbs] == ["pretrain"] and isinstance(verbs[0], Command)
    mounted = [c.name for c in app.registered_commands]
    assert mounted.count("pretrain") == 1


def test_prompt_variants_are_one_strategy_and_one_client() -> None:
    from fedsim.methods.pfedpg import VARIANTS
    from fedsim.strategies.pfedpg import AveragedPrompts, GeneratorRule, LocalPrompts

    expected = {
        "generated": GeneratorRule,
        "base": GeneratorRule,
        "global": AveragedPrompts,
        "none": LocalPrompts,
    }
    assert set(VARIANTS) == {"pfedpg", "pfedpg_base", "fedvpt", "vpt_local", "vpt_head"}
    for name, variant in VARIANTS.items():
        assert variant.sends in expected
        algorithm = ALGORITHMS.get(name)
        assert algorithm.params is variant.params
        train = algorithm.client.train
        assert train.keywords == {"tune_prompts": name != "vpt_head"}  # type: ignore[attr-defined]  # a partial


def test_memos_are_listed_and_cleared() -> None:
    from fedsim import memo

    table: memo.Memo[int] = memo.memo("test.square", 2)
    try:
        assert memo.MEMOS["test.square"] is table
        assert table.get(3, lambda: 9) == 9 and table.get(3, lambda: 0) == 9  # built once
        table.get(4, lambda: 16)
        table.get(5, lambda: 25)
        assert len(table) == 2 and table.get(3, lambda: -1) == -1  # the oldest went first
        memo.clear()
        assert len(table) == 0
        assert {"pfedpg.backbone", "pfedpg.encoder", "creamfl.paired", "fedloge.worker_net"} <= set(
            memo.MEMOS
        )
    finally:
        del memo.MEMOS["test.square"]
