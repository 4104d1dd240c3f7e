"""``fedsim edge``: train BottleFit split models, export them to ONNX, evaluate and profile.

Mounted on the main command line as ``fedsim edge`` (``app.add_typer(fedsim.edge.cli.app, name="edge")``).
Errors a user can cause raise :class:`~fedsim.errors.UserError`, which ``fedsim``'s entry
point prints as one line with exit code 2.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fedsim.config import METER, REQUESTS, WARMUP
from fedsim.errors import UserError
from fedsim.loader import require_kind
from fedsim.runner import KIND_RUNNERS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Edge split computing: BottleFit training, ONNX export, evaluation, profiling.",
)
console = Console()
if not console.is_terminal:  # wide tables stay readable in logs and pipes
    console = Console(width=160)

SetOption = Annotated[list[str] | None, typer.Option("--set", help="Override KEY.PATH=VALUE (repeatable).")]
ThreadsOption = Annotated[int, typer.Option(help="Torch intra-op threads (0: torch's default).", min=0)]


@KIND_RUNNERS.register("bottlefit")
def _run_experiment(
    path: Path, overrides: list[str], stop_after: int | None, quiet: bool, threads: int
) -> None:
    """``fedsim run`` on a BottleFit experiment: ``fedsim edge train``."""
    train(path, overrides, None, stop_after, quiet, threads)


@KIND_RUNNERS.register("edge-bench")
def _run_bench(path: Path, overrides: list[str], stop_after: int | None, quiet: bool, threads: int) -> None:
    """``fedsim run`` on an edge bench: ``fedsim edge bench``."""
    if stop_after is not None:
        raise UserError(
            "--stop-after does not apply to an edge bench; expected it only for runs in rounds or steps"
        )
    bench(path, overrides, quiet)


def _threads(n: int) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


@app.command()
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
    _threads(threads)
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


@app.command()
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


@app.command("evaluate")
def evaluate_(
    run: Annotated[Path, typer.Argument(help="An edge run folder.")],
    limit: Annotated[int | None, typer.Option(help="Use the first N test images.", min=1)] = None,
    threads: ThreadsOption = 0,
) -> None:
    """Per C at batch size 1: accuracy, loss vs teacher, payload vs raw and JPEG, head size and FLOPs."""
    from fedsim.edge.evaluate import EVALUATE_FILE, evaluate_run

    _threads(threads)
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


@app.command()
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


# --------------------------------------------------------------------- gRPC testbed


def _read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    if not path.is_file():
        raise UserError(f"--token-file {path}: no such file; expected a file holding the bearer token")
    token = path.read_text().strip()
    if not token:
        raise UserError(f"--token-file {path} is empty; expected the bearer token")
    return token


def _existing(path: Path | None, flag: str, what: str) -> Path | None:
    if path is not None and not path.is_file():
        raise UserError(f"{flag} {path}: no such file; expected {what}")
    return path


@app.command()
def serve(
    model: Annotated[Path, typer.Argument(help="ONNX folder (fedsim edge export) or edge run folder.")],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port).", min=0, max=65535)] = 50051,
    workers: Annotated[int, typer.Option(help="Requests computed at once.", min=1)] = 4,
    threads: Annotated[int, typer.Option(help="onnxruntime threads per model.", min=1)] = 1,
    max_message_bytes: Annotated[int, typer.Option(help="Largest request accepted.", min=1024)] = 4 << 20,
    queue_limit: Annotated[
        int, typer.Option(help="Calls accepted at once (more: RESOURCE_EXHAUSTED).", min=1)
    ] = 256,
    device: Annotated[
        str, typer.Option(help="Device profile the replies' emulated compute time assumes.")
    ] = ("this-host"),
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate (with --tls-key): serve TLS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="File holding the bearer token clients must send.")
    ] = None,
    port_file: Annotated[Path | None, typer.Option(help="Write the bound port here once serving.")] = None,
) -> None:
    """Serve the split models' tails and the whole model over gRPC until interrupted."""
    import logging
    import signal
    import threading

    from fedsim.edge.server import ServerConfig, TailServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServerConfig(
        host=host,
        port=port,
        workers=workers,
        threads=threads,
        max_message_bytes=max_message_bytes,
        queue_limit=queue_limit,
        device=device,
        tls_cert=_existing(tls_cert, "--tls-cert", "a PEM certificate"),
        tls_key=_existing(tls_key, "--tls-key", "a PEM private key"),
        token=_read_token(token_file),
    )
    server = TailServer(model, config)
    bound = server.start()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    if port_file is not None:
        tmp = port_file.with_name(f".{port_file.name}.tmp")
        tmp.write_text(f"{bound}\n")
        tmp.replace(port_file)
    console.print(f"serving {server.model.manifest['name']} on {host}:{bound}", highlight=False)
    done.wait()
    server.stop(grace=2.0)


class Mode(StrEnum):
    """Where the model runs."""

    local = "local"
    offload = "offload"
    split = "split"


def _print_worker(summary: dict[str, Any]) -> None:
    table = Table(
        title=(
            f"{summary['label']}: {summary['ok']}/{summary['requests']} ok, "
            f"accuracy {summary['accuracy']:.4f}, payload {summary['payload_bytes']:.0f} B, "
            f"wire {summary['wire_bytes']:.0f} B, {1e3 * summary['energy_J']['total']:.2f} mJ per inference "
            f"(time scale {summary['time_scale']:.3f})"
        )
    )
    for col in ("stage", "p50 ms", "p90 ms", "p99 ms", "mean ms", "energy mJ"):
        table.add_column(col, justify="right")
    for stage, q in summary["latency_ms"].items():
        e = summary["energy_J"].get(stage)
        table.add_row(
            stage,
            *(f"{q[k]:.3f}" for k in ("p50", "p90", "p99", "mean")),
            "" if e is None else f"{1e3 * e:.3f}",
        )
    console.print(table)
    for error in summary["errors"]:
        console.print(f"[red]failed:[/red] {error}", highlight=False)


@app.command()
def worker(
    mode: Annotated[
        Mode, typer.Option(help="local: whole model here; offload: JPEG to server; split: head here.")
    ],
    server: Annotated[str | None, typer.Option(help="HOST:PORT of fedsim edge serve.")] = None,
    out: Annotated[Path, typer.Option(help="Results go to OUT/<mode>-<device>-<network>[-C<c>]/.")] = Path(
        "results"
    ),
    device: Annotated[str, typer.Option(help="Device profile (labels results; the model meter's power).")] = (
        "this-host"
    ),
    emulate: Annotated[
        bool, typer.Option(help="Scale times to the profile's speed; --no-emulate on the real board.")
    ] = True,
    network: Annotated[str, typer.Option(help="Network profile for the shaper (none: no shaping).")] = "none",
    channels: Annotated[
        int | None, typer.Option("--channels", "-C", help="Bottleneck width C (split).")
    ] = None,
    requests: Annotated[int, typer.Option(help="Measured requests.", min=1)] = REQUESTS,
    warmup: Annotated[int, typer.Option(help="Unmeasured requests first.", min=0)] = WARMUP,
    meter: Annotated[
        str, typer.Option(help="Power meter: auto, model, rapl, jtop, ina219, nvml, csv.")
    ] = METER,
    meter_csv: Annotated[Path | None, typer.Option(help="USB power meter log for --meter csv.")] = None,
    meter_period: Annotated[float, typer.Option(help="Meter sample period in seconds.", min=0.001)] = 0.1,
    stream: Annotated[
        bool, typer.Option("--stream", help="Bidirectional stream instead of unary calls.")
    ] = False,
    jpeg_quality: Annotated[int, typer.Option(help="JPEG quality (offload).", min=1, max=100)] = 90,
    timeout: Annotated[float, typer.Option(help="Deadline of each call in seconds.", min=0.001)] = 10.0,
    retries: Annotated[int, typer.Option(help="Retries when the server is unavailable.", min=0)] = 8,
    seed: Annotated[int, typer.Option(help="Shaper seed (jitter, loss).")] = 0,
    threads: Annotated[int, typer.Option(help="onnxruntime threads on this device.", min=1)] = 1,
    model: Annotated[
        Path | None, typer.Option(help="Local ONNX folder (default: fetched from the server).")
    ] = None,
    tls_ca: Annotated[Path | None, typer.Option(help="CA certificate of a TLS server.")] = None,
    token_file: Annotated[Path | None, typer.Option(help="File holding the server's bearer token.")] = None,
) -> None:
    """Run inference requests against a tail server (or locally) and measure every stage."""
    from fedsim.edge.worker import Worker, WorkerConfig
    from rich.progress import Progress

    config = WorkerConfig(
        mode=mode.value,
        server=server,
        model_dir=model,
        device=device,
        emulate=emulate,
        network=None if network in ("none", "") else network,
        channels=channels,
        requests=requests,
        warmup=warmup,
        meter=meter,
        meter_period_s=meter_period,
        meter_csv=meter_csv,
        stream=stream,
        jpeg_quality=jpeg_quality,
        timeout_s=timeout,
        retries=retries,
        seed=seed,
        threads=threads,
        tls_ca=tls_ca,
        token=_read_token(token_file),
    )
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("requests", total=requests)
        w = Worker(config, lambda done, total: bar.update(task, completed=done))
        try:
            summary = w.run(out / config.label(w.channels))
        finally:
            w.close()
    _print_worker(summary)
    console.print(f"results in {out / summary['label']}", highlight=False)


@app.command()
def health(
    server: Annotated[str, typer.Option(help="HOST:PORT of fedsim edge serve.")] = "127.0.0.1:50051",
    tls_ca: Annotated[Path | None, typer.Option(help="CA certificate of a TLS server.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.", min=0.01)] = 3.0,
) -> None:
    """Ask the server's standard gRPC health service; exit 0 when it is SERVING."""
    import grpc
    from fedsim.edge.proto import SERVICE
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if tls_ca is not None:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_existing(tls_ca, "--tls-ca", "a CA certificate").read_bytes()
        )  # type: ignore[union-attr]
        channel = grpc.secure_channel(server, creds)
    else:
        channel = grpc.insecure_channel(server)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=timeout
            )
        except grpc.RpcError as err:
            raise UserError(f"edge server {server}: {err.code().name}: {err.details()}") from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    console.print(f"{server}: {status}", highlight=False)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise typer.Exit(1)


@app.command()
def bench(
    file: Annotated[Path, typer.Argument(help="Bench YAML file.")],
    set_: SetOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Local vs offloading vs split computing for every mode x device x network x C; writes a run folder."""
    from fedsim.edge.bench import BOTTLEFIT_REPORTED, run_bench

    from fedsim.runner import write_report_safely

    def log(line: str) -> None:
        if not quiet:
            console.print(line, highlight=False)

    require_kind(file, "edge-bench")
    run, summary = run_bench(file, list(set_ or []), log)
    table = Table(title="split computing against local computing and edge offloading (mean per inference)")
    for col in (
        "device",
        "network",
        "C",
        "split ms",
        "vs local",
        "vs offload",
        "split mJ",
        "vs local",
        "vs offload",
        "accuracy",
    ):
        table.add_column(col, justify="right")

    def pct(v: float | None) -> str:
        return "" if v is None else f"{v:+.0f}%"

    for r in summary["comparison"]:
        table.add_row(
            r["device"],
            r["network"],
            str(r["C"]),
            f"{r['split_latency_ms']:.1f}",
            pct(r.get("latency_vs_local_pct")),
            pct(r.get("latency_vs_offload_pct")),
            f"{1e3 * r['split_energy_J']:.2f}",
            pct(r.get("energy_vs_local_pct")),
            pct(r.get("energy_vs_offload_pct")),
            f"{r['split_accuracy']:.3f}",
        )
    console.print(table)
    ref = BOTTLEFIT_REPORTED
    console.print(
        f"BottleFit reports {ref['latency_vs_local']:+.0f}% latency and {ref['energy_vs_local']:+.0f}% power "
        f"against local, {ref['latency_vs_offload']:+.0f}% and {ref['energy_vs_offload']:+.0f}% "
        "against offloading.",
        highlight=False,
    )
    write_report_safely(run, console)
    console.print(f"{summary['status']}: results in {run}", highlight=False)
