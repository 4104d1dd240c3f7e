"""The config package: a leaf with kinds, ``base:`` files, sweeps."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from fedsim.config import SCHEMAS, ConfigError, parse, read_document
from fedsim.config.sweep import Cell, expand, parse_sweep_option
from fedsim.loader import load_scenario, read_file, validate_file

ROOT = Path(__file__).parents[1]


def test_the_schema_is_a_leaf_importing_nothing_of_fedsim_but_its_errors() -> None:
    for file in sorted((ROOT / "fedsim" / "config").glob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in ("fedsim", "clients", "edge"):
                    assert name.startswith(("fedsim.config", "fedsim.errors")), f"{file.name} imports {name}"


def test_other_modules_import_the_schema_from_the_package() -> None:
    """A module the package imports, imported directly by another thread while the package
    is being imported, deadlocks (Flower loads the ServerApp and the ClientApp side by side)."""
    from fedsim import config

    inner = {m.split(".")[-1] for m in dir(config)} & {"base", "common", "bench", "bottlefit", "files", "fl"}
    for file in sorted(p for d in ("fedsim", "clients", "edge") for p in (ROOT / d).rglob("*.py")):
        if "config" in file.relative_to(ROOT).parts[:2]:
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedsim.config."):
                assert node.module.split(".")[2] not in inner, f"{file}: from {node.module} import ..."


def test_every_kind_is_one_member_of_the_union() -> None:
    assert set(SCHEMAS) == {"fl", "bottlefit", "edge-bench"}
    assert parse({"name": "x", "rounds": 1}, "f").kind == "fl"  # the default
    assert parse({"kind": "bottlefit", "name": "x"}, "f").kind == "bottlefit"
    with pytest.raises(ConfigError, match="f: kind: unknown kind 'sweep'; expected one of: bottlefit"):
        parse({"kind": "sweep", "name": "x"}, "f")
    with pytest.raises(ConfigError, match=r"^f: teacher: unknown key; expected one of: algorithm, clients"):
        parse({"name": "x", "rounds": 1, "teacher": {}}, "f")  # errors name keys without the union's tag


def write(folder: Path, name: str, data: dict) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_base_files_merge_relative_to_the_file_naming_them(tmp_path: Path) -> None:
    write(
        tmp_path / "common",
        "root.yaml",
        {"name": "root", "rounds": 5, "clients": {"num": 4, "fraction": 0.5}},
    )
    write(tmp_path / "common", "mid.yaml", {"base": "root.yaml", "clients": {"num": 8}, "seed": 3})
    child = write(tmp_path, "child.yaml", {"base": "common/mid.yaml", "name": "child", "rounds": 2})
    raw, _ = read_document(child, ["clients.fraction=1.0"])
    assert raw == {"name": "child", "rounds": 2, "seed": 3, "clients": {"num": 8, "fraction": 1.0}}
    sc = load_scenario(child)
    assert (sc.name, sc.rounds, sc.seed, sc.clients.num, sc.clients.fraction) == ("child", 2, 3, 8, 0.5)


def test_missing_bases_and_cycles_are_one_line(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", {"base": "b.yaml", "name": "a", "rounds": 1})
    write(tmp_path, "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError) as err:
        read_document(a)
    assert str(err.value) == f"{tmp_path / 'b.yaml'}: base: a.yaml makes a cycle (a.yaml -> b.yaml -> a.yaml)"
    lost = write(tmp_path, "lost.yaml", {"base": "nope.yaml", "name": "x", "rounds": 1})
    with pytest.raises(
        ConfigError, match=r"lost.yaml: base: nope.yaml: no such file; expected a YAML file next"
    ):
        read_document(lost)
    odd = write(tmp_path, "odd.yaml", {"base": 3, "name": "x", "rounds": 1})
    with pytest.raises(ConfigError, match="base: expected the name of another YAML file"):
        read_document(odd)


def test_a_grid_expands_in_order_with_sections_merged() -> None:
    spec = {"algorithm": [{}, {"name": "fedprox", "mu": 0.1}], "seed": [0, 1], "train": {"batch_size": [8]}}
    cells = expand(spec, "f")
    assert [c.label for c in cells] == [
        "algorithm=default,seed=0,train.batch_size=8",
        "algorithm=default,seed=1,train.batch_size=8",
        "algorithm.name=fedprox,algorithm.mu=0.1,seed=0,train.batch_size=8",
        "algorithm.name=fedprox,algorithm.mu=0.1,seed=1,train.batch_size=8",
    ]
    raw = {
        "name": "x",
        "algorithm": {"name": "fedavg", "keep": 1},
        "train": {"batch_size": 16, "local_epochs": 2},
    }
    applied = cells[3].apply(raw)
    assert applied["algorithm"] == {"name": "fedprox", "keep": 1, "mu": 0.1}  # merged into the section
    assert applied["seed"] == 1 and applied["train"] == {"batch_size": 8, "local_epochs": 2}
    assert raw["algorithm"] == {"name": "fedavg", "keep": 1}  # the file's mapping is not changed
    assert expand({"algorithm.name": ["a"], "algorithm": {"name": ["b"]}}, "f")[0].values == (
        ("algorithm.name", "b"),
    )  # flat and nested forms of one key: the later wins


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([1, 2], "f: sweep: expected a mapping of key paths to lists of values"),
        ({"seed": 3}, "f: sweep.seed: expected a non-empty list of values, got 3"),
        ({"seed": []}, "f: sweep.seed: expected a non-empty list of values, got []"),
        ({"a b": [1]}, "f: sweep.a b: expected a key path such as algorithm.name"),
        ({"seed": list(range(40)), "rounds": list(range(40))}, "f: sweep: 1600 cells; expected at most 1000"),
        ({"name": ["a/b", "a_b"]}, "f: sweep: two cells would have the same name"),
    ],
)
def test_bad_grids_are_one_line(spec, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        expand(spec, "f")
    assert str(err.value).startswith(message)


def test_sweep_option_values_are_yaml_split_outside_brackets() -> None:
    assert parse_sweep_option("seed=0,1,2") == ("seed", [0, 1, 2])
    assert parse_sweep_option("model.channels=[8,16],[16,32]") == ("model.channels", [[8, 16], [16, 32]])
    assert parse_sweep_option("algorithm={name: fedprox, mu: 0.1},{}") == (
        "algorithm",
        [{"name": "fedprox", "mu": 0.1}, {}],
    )
    with pytest.raises(ConfigError, match=r"--sweep seed: expected KEY\.PATH=V1,V2"):
        parse_sweep_option("seed")


def test_validate_checks_every_cell_and_names_the_one_that_fails(write_scenario, tmp_path: Path) -> None:
    path = write_scenario({"sweep": {"algorithm": [{"name": "fedavg"}, {"name": "fedprox", "mu": -1}]}})
    with pytest.raises(ConfigError) as err:
        validate_file(path, [])
    assert "[algorithm.mu=-1,algorithm.name=fedprox]: algorithm.mu: Input should be greater than" in str(
        err.value
    )
    good = write(tmp_path, "good.yaml", {**yaml.safe_load(path.read_text()), "sweep": {"algorithm": [{}]}})
    line = validate_file(good, [], ["seed=0,1"])
    assert line.endswith("; a sweep of 2 cells over algorithm (1), seed (2)"), line


def test_a_single_load_of_a_sweep_file_says_how_to_run_it(write_scenario) -> None:
    path = write_scenario({"sweep": {"seed": [0, 1]}})
    with pytest.raises(ConfigError, match="declares a sweep of 2 cells; run it with 'fedsim run"):
        load_scenario(path)
    assert load_scenario(path, ["sweep=null"]).seed == 3
    assert read_file(path, [], ["seed=5,6,7"]).cells()[2].get("seed") == 7

    assert Cell((("seed", 1),)).label == "seed=1"


def test_cases_merge_at_the_top_level_and_labels_name_them() -> None:
    spec = {
        "case": [
            {"label": "domains"},
            {
                "label": "dir01",
                "data": {"partition": {"name": "dirichlet", "styles": None}},
                "clients": {"num": 10},
            },
        ],
        "algorithm": [{"label": "plain"}, {"name": "fedprox", "mu": 0.1}],
    }
    cells = expand(spec, "f")
    assert [c.label for c in cells] == [
        "case=domains,algorithm=plain",
        "case=domains,algorithm.name=fedprox,algorithm.mu=0.1",
        "case=dir01,algorithm=plain",
        "case=dir01,algorithm.name=fedprox,algorithm.mu=0.1",
    ]
    raw = {
        "data": {"dataset": "digits", "partition": {"name": "domains", "styles": [1]}},
        "clients": {"num": 4},
    }
    assert cells[0].apply(raw) == {**raw, "algorithm": {}}  # a label is not merged
    dir01 = cells[2].apply(raw)
    assert dir01["data"] == {"dataset": "digits", "partition": {"name": "dirichlet"}}  # null removed styles
    assert dir01["clients"] == {"num": 10}
    with pytest.raises(ConfigError, match=r"f: sweep\.case: expected a list of mappings"):
        expand({"case": [1]}, "f")


def test_null_in_a_base_chain_removes_the_key(tmp_path: Path) -> None:
    write(
        tmp_path,
        "root.yaml",
        {"name": "r", "rounds": 2, "sweep": {"seed": [0, 1]}, "runtime": {"name": "ray"}},
    )
    child = write(tmp_path, "child.yaml", {"base": "root.yaml", "sweep": None, "runtime": {"name": None}})
    raw, _ = read_document(child)
    assert raw == {"name": "r", "rounds": 2, "runtime": {}}
