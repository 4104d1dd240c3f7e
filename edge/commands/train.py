"""``fedsim edge train``, ``export``, ``evaluate`` and ``profile``: BottleFit models."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fedsim.edge.commands.common import SetOption, ThreadsOption, console, set_threads
from fedsim.errors import UserError
from fedsim.loader import require_kind


def train(
    experiment: Annotated[Path | None, typer.Argument(help="Edge experiment YAML file.")] = None,
    set_: SetOption = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this folder.")] = None,
    stop_after: Annotated[
        int | None, typer.Option(help="Stop after this many (C, stage) steps (resumable).", min=1)
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or log lines.")] = False,
    threads: ThreadsOption = 0,
) -> None:
    """Train the teacher (or load it), then both BottleFit stages for every C."""
    from fedsim.edge.train import TrainProgress, resume_training, start_training

    if (experiment is None) == (resume is None):
        raise UserError("give either an EXPERIMENT file or --resume RUN_FOLDER")
    if resume is not None and set_:
        raise UserError("--set cannot change a run being resumed; start a new run instead")
    set_threads(threads)
    progress = TrainProgress(console, bars=not quiet and console.is_terminal, log=not quiet)
    with progress:
        if resume is not None:
            folder, summary = resume_training(resume, progress, stop_after)
        else:
            assert experiment is not None
            require_kind(experiment, "bottlefit")
            folder, summary = start_training(experiment, list(set_ or []), progress, stop_after)
    _print_results(summary)
    from fedsim.runner import write_report_safely

    write_report_safely(folder.path, console)
    console.print(
        f"{summary['status']}: {summary['steps_completed']}/{summary['steps_planned']} steps; "
        f"results in {folder.path}",
        highlight=False,
    )


def _print_results(summary: dict[str, Any]) -> None:
    final = summary.get("final") or {}
    if not final:
        return
    teacher = summary.get("teacher", {})
    table = Table(title=f"{summary['name']}: teacher accuracy {teacher.get('accuracy', float('nan')):.4f}")
    for col in ("C", "stage", "accuracy", "with codec", "loss (points)", "payload B"):
        table.add_column(col, justify="right")
    for row in final.values():
        table.add_row(
            str(row["C"]),
            f"{row['stage']} ({row['mode']})",
            f"{row['accuracy']:.4f}",
            f"{row['codec_accuracy']:.4f} ({row['codec']})",
            f"{row['accuracy_loss_points']:+.2f}",
            f"{row['payload_bytes']:.0f}",
        )
    console.print(table)


def export(
    run: Annotated[Path, typer.Argument(help="An edge run folder.")],
    out: Annotated[Path, typer.Option(help="Output folder for the ONNX files and manifest.json.")],
    limit: Annotated[int | None, typer.Option(help="Check parity on the first N test images.", min=1)] = None,
) -> None:
    """Export head.onnx and tail.onnx per C; check them with onnx and onnxruntime."""
    from fedsim.edge.onnx_export import export_run

    manifest = export_run(run, out, limit)
    table = Table(title=f"ONNX export ({manifest['codec']} between head and tail)")
    for col in ("C", "head", "tail", "bottleneck", "max |diff|", "same class"):
        table.add_column(col, justify="right")
    for m in manifest["models"]:
        p = m["parity"]
        table.add_row(
            str(m["C"]),
            m["head"],
            m["tail"],
            "x".join(map(str, m["bottleneck_shape"])),
            f"{max(p['head_max_abs_diff'], p['tail_max_abs_diff']):.1e}",
            f"{p['same_predictions']}/{p['images']}",
        )
    console.print(table)
    console.print(f"manifest: {out / 'manifest.json'}", highlight=False)


def evaluate_(
    run: Annotated[Path, typer.Argument(help="An edge run folder.")],
    limit: Annotated[int | None, typer.Option(help="Use the first N test images.", min=1)] = None,
    threads: ThreadsOption = 0,
) -> None:
    """Per C at batch size 1: accuracy, loss vs teacher, payload vs raw and JPEG, head size and FLOPs."""
    from fedsim.edge.evaluate import EVALUATE_FILE, evaluate_run

    set_threads(threads)
    res = evaluate_run(run, limit)
    t, inp = res["teacher"], res["input"]
    shape = "x".join(map(str, inp["shape"]))
    title = (
        f"{res['test_images']} test images at batch size 1; teacher accuracy {t['accuracy']:.4f}, "
        f"{t['parameters']:,} parameters, {t['flops'] / 1e6:.1f} MFLOPs; input "
        f"{shape}: raw {inp['raw_bytes']:.0f} B, JPEG q95 {inp['jpeg_bytes']:.0f} B"
    )
    table = Table(title=title)
    columns = (
        "C",
        "accuracy",
        "loss (points)",
        f"payload B ({res['codec']})",
        "% of raw",
        "% of JPEG",
        "head params",
        "head KB",
        "head MFLOPs",
    )
    for col in columns:
        table.add_column(col, justify="right")
    for r in res["rows"]:
        table.add_row(
            str(r["C"]),
            f"{r['accuracy']:.4f}",
            f"{r['accuracy_loss_points']:+.2f}",
            f"{r['payload_bytes']:.0f}",
            f"{100 * r['payload_share_raw']:.1f}",
            f"{100 * r['payload_share_jpeg']:.1f}",
            f"{r['head_parameters']:,}",
            f"{r['head_bytes'] / 1024:.1f}",
            f"{r['head_flops'] / 1e6:.2f}",
        )
    console.print(table)
    console.print(f"written: {Path(res['run']) / EVALUATE_FILE}", highlight=False)


class ProfileModel(StrEnum):
    """Models ``profile`` can build."""

    resnet18 = "resnet18"
    resnet50 = "resnet50"
    resnet152 = "resnet152"
    small = "small"


def profile(
    model: Annotated[ProfileModel, typer.Argument(help="Which model to profile.")],
    size: Annotated[int, typer.Option(help="Input image side in pixels.", min=16, max=1024)] = 224,
    repeats: Annotated[int, typer.Option(help="Timed runs per stage (median).", min=1)] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed runs per stage.", min=0)] = 2,
    threads: ThreadsOption = 0,
) -> None:
    """Per-stage latency and output size of an unmodified ResNet at batch size 1 (split candidates)."""
    from fedsim.edge.profile import profile_split_points
    from fedsim.edge.resnet import resnet18, resnet50, resnet152, small_resnet

    builders = {
        "resnet18": lambda: resnet18(1000),
        "resnet50": lambda: resnet50(1000),
        "resnet152": lambda: resnet152(1000),
        "small": lambda: small_resnet(10, 3, 16, (1, 1, 1, 1), stem_pool=size >= 64),
    }
    net = builders[model.value]()
    rows = profile_split_points(net, (3, size, size), repeats, warmup, threads or None)
    raw = rows[0]["input_bytes_uint8"]
    table = Table(title=f"{model.value} at {size}x{size}, batch 1 (raw uint8 input {raw:,} B)")
    for col in (
        "after",
        "output shape",
        "fp32 B",
        "quant8 B",
        "quant8 % of raw",
        "stage ms",
        "cumulative ms",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["boundary"],
            "x".join(map(str, r["output_shape"])),
            f"{r['output_bytes_fp32']:,}",
            f"{r['output_bytes_quant8']:,}",
            f"{100 * r['output_bytes_quant8'] / raw:.1f}",
            f"{r['stage_latency_ms']:.2f}",
            f"{r['cumulative_latency_ms']:.2f}",
        )
    console.print(table)
