"""Dashboards: report.html and figures of real (small) run folders, and a headless browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from fedsim.cli import app
from fedsim.report import write_compare, write_report
from fedsim.report.figures import DPI, FIGURES, SIZE, colour
from fedsim.runner import start_run, write_report_safely

QUIET = Console(quiet=True)
FL_FIGURES = ["accuracy", "loss", "client_accuracy", "bytes", "compute"]
SYSTEM = {
    "mix": [
        {"share": 0.5, "device": "rpi4", "network": "wifi"},
        {"share": 0.5, "device": "jetson-nano", "network": "lte"},
    ],
}
PNG_SIZE = (round(SIZE[0] * DPI), round(SIZE[1] * DPI))


def run(path: Path, stop_after: int | None = None) -> Path:
    folder, _ = start_run(path, [], stop_after, False, False, QUIET)
    return folder.path


def figure_ids(page: str) -> set[str]:
    import re

    return set(re.findall(r'<figure id="fig-([a-z_]+)"', page))


def test_run_ends_with_a_self_contained_report(write_scenario) -> None:
    folder = run(write_scenario({"rounds": 2, "system": SYSTEM}))
    page = (folder / "report.html").read_text()  # written by the run itself
    assert set(FL_FIGURES) | {"accuracy_vs_time", "accuracy_vs_energy"} <= figure_ids(page)
    assert "fig-edge_payload" not in page  # an edge figure, not listed for a federated run
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "name: tiny" in page and "flwr" in page and "completed" in page  # scenario, versions, status
    for name in figure_ids(page):
        with Image.open(folder / "figures" / f"{name}.png") as im:
            im.verify()
        with Image.open(folder / "figures" / f"{name}.png") as im:
            assert im.size == PNG_SIZE and im.format == "PNG"
        assert (folder / "figures" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    # rebuilt from the folder by the command line
    (folder / "report.html").unlink()
    res = CliRunner().invoke(app, ["report", str(folder)])
    assert res.exit_code == 0, res.output
    assert figure_ids((folder / "report.html").read_text()) == figure_ids(page)


def test_interrupted_run_says_what_is_missing(write_scenario) -> None:
    folder = run(write_scenario({"rounds": 3, "evaluation": {"clients_every": 0}}), stop_after=1)
    page = (folder / "report.html").read_text()
    assert "run status is &#x27;stopped&#x27;: 1 of 3 planned completed" in page
    assert "no client evaluation rows" in page
    assert "Per-client accuracy, last evaluated round: not drawn, needs client evaluation rows" in page
    assert {"accuracy", "loss", "bytes", "compute"} <= figure_ids(page)
    # killed mid-run: no summary, a torn last metrics line, no clients file
    (folder / "summary.json").unlink()
    (folder / "clients.jsonl").unlink()
    with open(folder / "metrics.jsonl", "a") as fh:
        fh.write('{"round": 2, "server_acc')
    page = write_report(folder).read_text()
    assert "no summary.json" in page and "no client train rows" in page
    assert "accuracy" in figure_ids(page)


def test_compare_overlays_runs(write_scenario, tmp_path: Path) -> None:
    a = run(write_scenario({"rounds": 1}, name="a.yaml"))
    b = run(write_scenario({"rounds": 1, "algorithm": {"name": "fedprox", "mu": 0.01}}, name="b.yaml"))
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "generic" in res.output  # the table is still printed
    page = (out / "report.html").read_text()
    assert set(FL_FIGURES) <= figure_ids(page) and a.name in page and b.name in page
    assert (out / "figures" / "accuracy.png").is_file()
    assert colour("fedavg") != colour("fedprox") and colour("x-new") == colour("x-new")
    assert write_compare([a, b], out) == out / "report.html"


def test_edge_run_payload_figure(tmp_path: Path) -> None:
    """Hand-written edge run folder (training one takes too long here): payload figure per C."""
    folder = tmp_path / "edge-run"
    folder.mkdir()
    (folder / "experiment.yaml").write_text("name: edge-run\nbottleneck_channels: [1, 2]\n")
    rows = [
        {"C": c, "stage": 2, "payload_bytes": 300.0 * c, "codec_accuracy": 0.9, "teacher_accuracy": 0.95}
        for c in (1, 2)
    ]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = write_report(folder).read_text()
    assert figure_ids(page) == {"edge_payload"} and "no evaluate.json" in page
    evaluate = {
        "teacher": {"accuracy": 0.95},
        "input": {"raw_bytes": 12288.0, "jpeg_bytes": 2785.0},
        "rows": [{"C": r["C"], "payload_bytes": r["payload_bytes"], "accuracy": 0.91} for r in rows],
    }
    (folder / "evaluate.json").write_text(json.dumps(evaluate))
    page = write_report(folder).read_text()
    assert figure_ids(page) == {"edge_payload"} and "no evaluate.json" not in page
    with Image.open(folder / "figures" / "edge_payload.png") as im:
        assert im.size == PNG_SIZE


def test_report_failure_does_not_lose_the_run(tmp_path: Path, capsys) -> None:
    console = Console(file=None, force_terminal=False, width=200)
    assert write_report_safely(tmp_path / "nowhere", console) is None
    assert "warning: report not written" in capsys.readouterr().out
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere")])
    assert res.exit_code != 0


def test_every_figure_handles_empty_runs() -> None:
    for entry in FIGURES:
        assert entry.obj([]) is None


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (Debian package chromium)")
def test_headless_chromium_renders_the_report(write_scenario, tmp_path: Path) -> None:
    folder = run(write_scenario({"rounds": 1}))
    shot = tmp_path / "shot.png"
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        (folder / "report.html").resolve().as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), res.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1200, 2000)
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        non_white = sum(n for n, c in colours if c != (255, 255, 255))
    assert len(colours) > 20 and non_white > 0.01 * 1200 * 2000  # text and figures, not a blank page
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_plugins_skip_an_absent_package_and_fail_on_a_broken_one(monkeypatch, tmp_path: Path) -> None:
    from fedsim import plugins

    monkeypatch.setitem(plugins.PLUGINS, "test-absent", ("fedsim.no_such_package.report",))
    plugins.load("test-absent")  # a slim install without the package: nothing registered, no error
    (tmp_path / "broken_report_plugin.py").write_text("import no_such_dependency_of_the_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(plugins.PLUGINS, "test-broken", ("broken_report_plugin",))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_of_the_plugin"):
        plugins.load("test-broken")  # the package is there but cannot import: loud
