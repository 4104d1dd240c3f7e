"""Scenario schema: defaults, one-line errors naming file, key path and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsim.scenario import ScenarioError, apply_overrides, load_scenario


def error_of(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(ScenarioError) as info:
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
    from fedsim.strategies import STRATEGIES

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
    assert "no such scenario file" in error_of(tmp_path / "nope.yaml")
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


def test_every_shipped_scenario_validates() -> None:
    """Every YAML under scenarios/: FL scenarios, edge experiments and edge benches (by their keys)."""
    import yaml

    from edge.bench import configurations, load_bench
    from edge.experiment import load_experiment

    files = sorted(Path(__file__).parents[1].glob("scenarios/**/*.yaml"))
    assert files, "no scenarios shipped"
    kinds = {"fl": 0, "edge": 0, "bench": 0}
    for file in files:
        raw = yaml.safe_load(file.read_text())
        if "bottleneck_channels" in raw:
            load_experiment(file)
            kinds["edge"] += 1
        elif "devices" in raw and "modes" in raw:
            bench = load_bench(file)
            if bench.model.train is not None:
                load_experiment(bench.model.train, bench.model.set)
            channels = bench.model.timing.channels if bench.model.timing else [1, 2, 4, 8]
            assert configurations(bench, channels)
            kinds["bench"] += 1
        else:
            load_scenario(file)
            kinds["fl"] += 1
    assert kinds["fl"] >= 2 and kinds["edge"] >= 1 and kinds["bench"] >= 2
