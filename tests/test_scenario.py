"""Scenario schema: defaults, one-line errors naming file, key path and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsim.config import apply_overrides
from fedsim.errors import ConfigError
from fedsim.loader import load_scenario
from tests.helpers import cli


def error_of(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_scenario(path, overrides)
    return str(info.value)


def test_valid_scenario_fills_defaults(write_scenario) -> None:
    sc = load_scenario(write_scenario())
    assert sc.rounds == 3
    assert sc.clients.per_round() == 3
    assert sc.runtime.name == "inprocess"
    assert sc.data.partition.params == {"alpha": 0.5}


def test_unknown_key_names_path_and_allowed_keys(write_scenario) -> None:
    msg = error_of(write_scenario({"clients": {"nmu": 3}}))
    assert msg.count("\n") == 0
    assert "scenario.yaml: clients.nmu: unknown key; expected one of: fraction, min, num" in msg


def test_fraction_above_one(write_scenario) -> None:
    msg = error_of(write_scenario({"clients": {"fraction": 1.5}}))
    assert "clients.fraction" in msg and "less than or equal to 1" in msg and "1.5" in msg


def test_wrong_type(write_scenario) -> None:
    msg = error_of(write_scenario({"rounds": "many"}))
    assert "rounds: Input should be a valid integer" in msg


def test_dirichlet_alpha_must_be_positive(write_scenario) -> None:
    msg = error_of(write_scenario({"data": {"partition": {"name": "dirichlet", "alpha": 0}}}))
    assert "data.partition.alpha" in msg and "greater than 0" in msg


def test_unknown_component_lists_known(write_scenario) -> None:
    msg = error_of(write_scenario({"algorithm": {"name": "fedsgd"}}))
    from fedsim.algorithms import ALGORITHMS as STRATEGIES

    known = ", ".join(sorted(STRATEGIES.names()))
    assert {"fedavg", "fedloge", "fedprox"} <= set(STRATEGIES.names())
    assert f"algorithm.name: unknown algorithm 'fedsgd'; expected one of: {known}" in msg


def test_component_parameter_checked(write_scenario) -> None:
    msg = error_of(write_scenario({"algorithm": {"name": "fedprox", "mu": -1}}))
    assert "algorithm.mu" in msg and "greater than or equal to 0" in msg


def test_min_above_num(write_scenario) -> None:
    msg = error_of(write_scenario({"clients": {"num": 2, "min": 3}}))
    assert "clients: min (3) must be at most num (2)" in msg


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    assert "no such file; expected a YAML experiment file" in error_of(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert "not valid YAML at line" in error_of(bad)


def test_overrides_validated_the_same_way(write_scenario) -> None:
    path = write_scenario()
    sc = load_scenario(path, ["rounds=7", "clients.num=5", "data.partition.alpha=0.1"])
    assert (sc.rounds, sc.clients.num, sc.data.partition.params["alpha"]) == (7, 5, 0.1)
    msg = error_of(path, ["clients.fraction=2"])
    assert "--set clients.fraction=2" in msg and "clients.fraction" in msg
    assert "expected KEY.PATH=VALUE" in error_of(path, ["rounds"])
    assert "clients.bogus: unknown key" in error_of(path, ["clients.bogus=1"])


def test_apply_overrides_does_not_mutate() -> None:
    raw = {"clients": {"num": 1}}
    out = apply_overrides(raw, ["clients.num=9", "model.name=mlp"])
    assert raw == {"clients": {"num": 1}}
    assert out == {"clients": {"num": 9}, "model": {"name": "mlp"}}


def test_every_shipped_file_validates_against_the_schema_of_its_kind() -> None:
    """Every YAML under scenarios/: FL scenarios, BottleFit experiments and edge benches."""
    import fedsim.edge.cli  # noqa: F401  registers the edge kinds, as the fedsim command line does
    from fedsim.edge.bench import configurations
    from fedsim.loader import load_bench, load_experiment, read_file, validate_file

    files = sorted(Path(__file__).parents[1].glob("scenarios/**/*.yaml"))
    assert files, "no scenarios shipped"
    kinds = {"fl": 0, "bottlefit": 0, "edge-bench": 0}
    for file in files:
        kind = read_file(file).kind  # its bases included
        kinds[kind] += 1
        assert validate_file(file, []).startswith(f"{file}: ")
        if kind == "edge-bench":
            bench = load_bench(file)
            if bench.model.train is not None:
                load_experiment(bench.model.train, bench.model.set)
            channels = bench.model.timing.channels if bench.model.timing else [1, 2, 4, 8]
            assert configurations(bench, channels)
        elif kind == "fl":
            assert load_scenario(file, ["sweep=null"]).kind == "fl"
    assert kinds["fl"] >= 2 and kinds["bottlefit"] >= 1 and kinds["edge-bench"] >= 2


@pytest.mark.parametrize("name", ["bottlefit_shapes", "edge_bench_shapes", "edge_bench_resnet18"])
def test_validate_recognises_edge_files(name: str) -> None:
    res = cli("validate", f"scenarios/{name}.yaml", cwd=Path(__file__).parents[1])
    assert res.returncode == 0, res.stderr
    assert (
        res.stdout.startswith(f"ok scenarios/{name}.yaml: ") and "unknown key" not in res.stdout + res.stderr
    )


def test_a_file_without_its_kind_is_told_which_kind_it_looks_like(tmp_path: Path) -> None:
    shipped = (Path(__file__).parents[1] / "scenarios" / "bottlefit_shapes.yaml").read_text()
    file = tmp_path / "bf.yaml"
    file.write_text(shipped.replace("kind: bottlefit\n", ""))
    res = cli("validate", str(file))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: {file}: its keys are those of a bottlefit file; add 'kind: bottlefit' at the top "
        "(a file without kind: is read as kind fl)"
    ]
    file.write_text("kind: sweep\nname: x\n")
    res = cli("validate", str(file))
    assert res.returncode == 2
    assert "kind: unknown kind 'sweep'; expected one of: bottlefit, edge-bench, fl" in res.stderr


def test_non_finite_floats_are_refused_everywhere(write_scenario) -> None:
    for key, value in [
        ("train.optimizer.lr", ".inf"),
        ("algorithm.mu", "-.inf"),
        ("clients.fraction", ".nan"),
    ]:
        extra = {"algorithm": {"name": "fedprox", "mu": 0.01}}
        with pytest.raises(ConfigError, match=f"{key}: Input should be a finite number"):
            load_scenario(write_scenario(extra), [f"{key}={value}"])


def test_many_problems_print_at_most_three_lines(write_scenario) -> None:
    bad = {"rounds": "x", "seed": "y", "clients": {"num": "z"}, "train": {"batch_size": "w"}}
    with pytest.raises(ConfigError) as err:
        load_scenario(write_scenario(bad))
    lines = str(err.value).splitlines()
    assert len(lines) == 3 and lines[-1].endswith("... and 2 more problems")


@pytest.mark.parametrize(
    ("command", "text", "kind"),
    [
        (["edge", "train"], "kind: fl\nname: x\nrounds: 1\n", "fl"),
        (["edge", "bench"], "bottlefit_shapes", "bottlefit"),
    ],
)
def test_a_file_of_another_kind_given_to_an_edge_command_names_fedsim_run(tmp_path, command, text, kind):
    root = Path(__file__).parents[1]
    file = f"scenarios/{text}.yaml"
    if "\n" in text:  # a file that declares its kind (without kind: edge commands take their own)
        file = str(tmp_path / "declared.yaml")
        Path(file).write_text(text)
    res = cli(*command, file, cwd=root)
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: {file} is of kind {kind}; run it with 'fedsim run {file}'"
