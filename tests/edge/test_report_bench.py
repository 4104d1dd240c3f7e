"""report.html of a real (tiny) ``fedsim edge bench`` run folder, complete and interrupted."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from fedsim.cli import app
from fedsim.edge.bench_files import BENCH_STAGES
from fedsim.report import write_report
from fedsim.report.data import load_run
from fedsim.report.figures import FIGURES, colour
from fedsim.runner import write_report_safely

pytestmark = pytest.mark.slow  # every test reads one real bench run (about 20 s)
BENCH_FIGURES = {"bench_latency", "bench_power", "bench_energy", "bench_payload"}
LABELS = ["local-rpi4-none", "offload-rpi4-wifi", "split-rpi4-wifi-C1", "split-rpi4-wifi-C3"]


@pytest.fixture(scope="module")
def bench_run(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real bench (local, offload, split C=1 and C=3 on rpi4 over Wi-Fi), run once per module."""
    from fedsim.edge.bench import run_bench

    root = tmp_path_factory.mktemp("bench")
    spec = {
        "name": "t",
        "model": {"onnx": str(tiny_onnx)},
        "devices": ["rpi4"],
        "networks": ["wifi"],
        "requests": 5,
        "warmup": 1,
        "output": {"dir": str(root / "runs")},
    }
    path = root / "bench.yaml"
    path.write_text(yaml.safe_dump(spec))
    run, summary = run_bench(path, log=lambda line: None)
    assert summary["status"] == "completed"
    return run


def figure_ids(page: str) -> set[str]:
    return set(re.findall(r'<figure id="fig-([a-z_]+)"', page))


def table(page: str, table_id: str) -> list[list[str]]:
    """The cells of an HTML table of the page, row by row (header row first)."""
    body = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S)
    assert body is not None, f"no table {table_id}"
    rows = re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)
    return [[html.unescape(c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", r, re.S)] for r in rows]


def by_label(rows: list[list[str]]) -> dict[str, dict[str, str]]:
    head = rows[0]
    return {r[0]: dict(zip(head, r, strict=True)) for r in rows[1:]}


def worker_summary(run: Path, label: str) -> dict:
    return json.loads((run / "workers" / label / "summary.json").read_text())


def test_bench_report_has_figures_and_tables(bench_run: Path, tmp_path: Path) -> None:
    run = shutil.copytree(bench_run, tmp_path / bench_run.name)
    console = Console(file=None, force_terminal=False, width=200)
    assert write_report_safely(run, console) == run / "report.html"  # as fedsim edge bench calls it
    page = (run / "report.html").read_text()
    assert figure_ids(page) == BENCH_FIGURES
    assert "figures-missing" not in page and 'id="missing-' not in page
    assert not re.search(r'(src|href)="https?://', page) and "<script" not in page
    assert "name: t" in page and "onnxruntime" in page and "4 of 4" in page  # bench YAML, versions, progress
    for name in BENCH_FIGURES:
        with Image.open(run / "figures" / f"{name}.png") as im:
            im.verify()
        assert (run / "figures" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
        assert f'alt="{FIGURES.entry(name).summary}"' in page

    latency = by_label(table(page, "bench-latency"))
    assert list(latency) == LABELS
    for label in LABELS:
        total = worker_summary(run, label)["latency_ms"]["total"]
        for q in ("p50", "p90", "p99"):
            assert latency[label][f"{q} (ms)"] == f"{total[q]:.2f}"
        assert latency[label]["ok / requests"] == "5 / 5"
    split = worker_summary(run, "split-rpi4-wifi-C1")
    assert latency["split-rpi4-wifi-C1"]["energy (mJ)"] == f"{1e3 * split['energy_J']['total']:.3f}"
    stages = table(page, "bench-stages")
    network = next(r for r in stages if r[:2] == ["split-rpi4-wifi-C1", "network"])
    assert network[4] == f"{split['latency_ms']['network']['p99']:.3f}"

    comparison = table(page, "bench-comparison")
    stored = json.loads((run / "comparison.json").read_text())
    assert [r[2] for r in comparison[1:-1]] == [str(r["C"]) for r in stored] == ["1", "3"]
    assert comparison[1][4] == f"{stored[0]['latency_vs_local_pct']:+.1f}%"
    assert comparison[1][8] == f"{stored[0]['energy_vs_offload_pct']:+.1f}%"
    assert comparison[-1][0] == "BottleFit (reported)" and comparison[-1][4] == "-89.0%"

    res = CliRunner().invoke(app, ["report", str(run)])  # rebuilt by the command line
    assert res.exit_code == 0, res.output
    assert figure_ids((run / "report.html").read_text()) == BENCH_FIGURES


def test_bench_figures_draw_the_measurements(bench_run: Path) -> None:
    runs = [load_run(bench_run)]
    fig = FIGURES.get("bench_latency")(runs)
    ax = fig.axes[0]
    ticks = ax.get_yticklabels()
    order = sorted(ticks, key=lambda t: -t.get_position()[1])  # top to bottom
    assert [t.get_text() for t in order] == LABELS
    for t in order:
        assert t.get_color() == colour(t.get_text().split("-")[0])
    stacked = {}  # bar y -> summed segment widths
    for patch in ax.patches:
        stacked[round(patch.get_y(), 3)] = stacked.get(round(patch.get_y(), 3), 0.0) + patch.get_width()
    for t, width in zip(order, sorted(stacked.items(), key=lambda kv: -kv[0]), strict=True):
        lat = worker_summary(bench_run, t.get_text())["latency_ms"]
        assert width[1] == pytest.approx(sum(lat[s]["mean"] for s in BENCH_STAGES))
    assert "ms" in ax.get_xlabel()

    energy = FIGURES.get("bench_energy")(runs).axes[0]
    heights = {p.get_label(): p for p in energy.containers}  # one container per series
    assert set(heights) == {"local", "offload", "split C=1", "split C=3"}
    local = worker_summary(bench_run, "local-rpi4-none")["energy_J"]["total"]
    assert heights["local"].patches[0].get_height() == pytest.approx(1e3 * local)
    assert heights["offload"].patches[0].get_facecolor()[:3] == pytest.approx(
        tuple(int(colour("offload")[i : i + 2], 16) / 255 for i in (1, 3, 5))
    )
    assert "mJ" in energy.get_ylabel()

    power = FIGURES.get("bench_power")(runs)
    titles = [a.get_title() for a in power.axes]
    assert titles[0].startswith("split-rpi4-wifi-C1") and titles[1].startswith("local-rpi4-none")
    assert all(a.get_ylabel() == "device power (W)" for a in power.axes)

    payload = FIGURES.get("bench_payload")(runs).axes[0]
    assert payload.get_xscale() == "log"
    raw = worker_summary(bench_run, "split-rpi4-wifi-C1")["raw_bytes"]
    assert any(f"raw input: {raw:,.0f} B" == line.get_label() for line in payload.get_lines())
    split = next(line for line in payload.get_lines() if line.get_label() == "split (per C)")
    expected = [worker_summary(bench_run, f"split-rpi4-wifi-C{c}")["payload_bytes"] for c in (1, 3)]
    assert list(split.get_xdata()) == pytest.approx(expected)


def test_interrupted_bench_says_what_is_missing(bench_run: Path, tmp_path: Path) -> None:
    run = shutil.copytree(bench_run, tmp_path / bench_run.name)
    workers = run / "workers"
    # the last worker was killed after two requests (a torn third line), before its summary and trace
    cut = workers / "split-rpi4-wifi-C3"
    rows = (cut / "requests.jsonl").read_text().splitlines()[:2]
    (cut / "requests.jsonl").write_text("\n".join(rows) + '\n{"request_id": 2, "pre')
    (cut / "summary.json").unlink()
    (cut / "power_trace.json").unlink()
    shutil.rmtree(workers / "offload-rpi4-wifi")  # finished (listed in summary.json), files lost
    (run / "comparison.json").unlink()
    summary = json.loads((run / "summary.json").read_text())
    summary["status"] = "interrupted"
    summary["workers"] = [w for w in summary["workers"] if w["label"] != cut.name]
    summary.pop("comparison")
    (run / "summary.json").write_text(json.dumps(summary))

    page = write_report(run).read_text()
    assert "run status is &#x27;interrupted&#x27;: 3 of 4 configurations completed" in page
    assert "workers/split-rpi4-wifi-C3: no summary.json; cut off after 2 requests" in page
    assert "workers/split-rpi4-wifi-C3: power_trace.json missing" in page
    assert "workers/offload-rpi4-wifi: requests.jsonl, summary.json, power_trace.json missing" in page
    assert "no comparison.json" in page and 'id="bench-comparison"' not in page
    assert figure_ids(page) == BENCH_FIGURES  # drawn from what is there
    latency = by_label(table(page, "bench-latency"))
    partial = latency["split-rpi4-wifi-C3 (partial)"]
    totals = [json.loads(r)["total_ms"] for r in rows]
    assert partial["ok / requests"] == "2 / 2"
    assert partial["p99 (ms)"] == f"{np.percentile(totals, 99):.2f}"
    offload = worker_summary(bench_run, "offload-rpi4-wifi")["latency_ms"]["total"]["p99"]
    assert latency["offload-rpi4-wifi"]["p99 (ms)"] == f"{offload:.2f}"  # from summary.json's list

    # no power traces at all: the figure is named as not drawn, the rest stays
    for trace in workers.glob("*/power_trace.json"):
        trace.unlink()
    page = write_report(run).read_text()
    assert figure_ids(page) == BENCH_FIGURES - {"bench_power"}
    assert "Device power over time, traced requests: not drawn, needs workers/*/power_trace.json" in page


def test_bench_killed_before_any_worker(bench_run: Path, tmp_path: Path) -> None:
    run = shutil.copytree(bench_run, tmp_path / bench_run.name)
    shutil.rmtree(run / "workers")
    (run / "comparison.json").unlink()
    summary = json.loads((run / "summary.json").read_text())
    summary.update(status="running", workers=[])
    summary.pop("comparison")
    (run / "summary.json").write_text(json.dumps(summary))
    page = write_report(run).read_text()
    assert "run status is &#x27;running&#x27;: 0 of 4 configurations completed" in page
    assert "no worker results" in page and "4 of 4 configurations have no results at all" in page
    assert figure_ids(page) == set() and 'id="bench-latency"' not in page
    for name in BENCH_FIGURES:
        assert f"{FIGURES.entry(name).summary}: not drawn" in page
    (run / "summary.json").unlink()  # killed before even that
    assert "no summary.json" in write_report(run).read_text()


def test_edge_registers_its_report_parts_and_the_worker_stays_light() -> None:
    """The core report names no edge kind; the worker imports neither matplotlib nor edge's report."""
    import subprocess
    import sys

    code = (
        "import sys, fedsim.edge, fedsim.edge.worker, fedsim.report.data\n"
        "assert 'fedsim.edge.report' not in sys.modules and 'matplotlib' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    core = "".join(p.read_text() for p in (Path(__file__).parents[2] / "fedsim" / "report").glob("*.py"))
    assert "edge-bench" not in core and '"edge"' not in core and "bottlefit" not in core.lower()
