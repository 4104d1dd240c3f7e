"""Time- and energy-to-accuracy rows of ``fedsim compare --target-accuracy``."""

from __future__ import annotations

import json
from pathlib import Path

from fedsim.compare import system_totals, target_rows, to_target


def folder(tmp_path: Path, name: str, rows: list[dict]) -> Path:
    path = tmp_path / name
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_first_round_reaching_the_target(tmp_path: Path) -> None:
    sys_run = folder(
        tmp_path,
        "a",
        [
            {"round": 0, "server_accuracy": 0.1, "virtual_time_s": 0.0, "energy_J": 0.0},
            {"round": 1, "server_accuracy": 0.85, "virtual_time_s": 2.5, "energy_J": 10.0, "late": 2},
            {"round": 2, "server_accuracy": 0.95, "virtual_time_s": 5.0, "energy_J": 20.0, "dropped": 1},
        ],
    )
    plain = folder(
        tmp_path, "b", [{"round": 0, "server_accuracy": 0.1}, {"round": 1, "server_accuracy": 0.9}]
    )
    assert to_target(sys_run, 0.9) == {"round": 2, "virtual_time_s": 5.0, "energy_J": 20.0}
    assert to_target(sys_run, 0.99) is None
    assert to_target(plain, 0.9) == {"round": 1, "virtual_time_s": None, "energy_J": None}
    rows = dict(target_rows([sys_run, plain], 0.9))
    assert rows["rounds to 0.9"] == ["2", "1"]
    assert rows["virtual time to 0.9 (s)"] == ["5.0", "-"]
    assert rows["energy to 0.9 (J)"] == ["20.0", "-"]
    assert dict(target_rows([sys_run], 0.99))["rounds to 0.99"] == ["not reached"]
    totals = dict(system_totals([sys_run, plain]))
    assert totals["virtual time (s)"] == ["5.0", "-"]
    assert totals["updates late"] == ["2", "-"] and totals["updates dropped"] == ["1", "-"]
