"""``fedsim edge serve``, ``worker`` and ``health``: the gRPC testbed."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fedsim.config import WORKER
from fedsim.edge.commands.common import console, existing, read_token
from fedsim.errors import UserError


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
    grace_s: Annotated[
        float, typer.Option(min=0, help="On SIGTERM/SIGINT: seconds the calls in flight get to finish.")
    ] = 5.0,
) -> None:
    """Serve the split models' tails and the whole model over gRPC until interrupted (SIGTERM or
    SIGINT drain it: health NOT_SERVING, new calls refused, calls in flight finished)."""
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
        tls_cert=existing(tls_cert, "--tls-cert", "a PEM certificate"),
        tls_key=existing(tls_key, "--tls-key", "a PEM private key"),
        token=read_token(token_file),
    )
    server = TailServer(model, config)
    bound = server.start()
    done = threading.Event()
    got: list[str] = []

    def on_signal(sig: int, _frame: object) -> None:
        got.append(signal.Signals(sig).name)
        done.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    if port_file is not None:
        tmp = port_file.with_name(f".{port_file.name}.tmp")
        tmp.write_text(f"{bound}\n")
        tmp.replace(port_file)
    console.print(f"serving {server.model.manifest['name']} on {host}:{bound}", highlight=False)
    done.wait()
    logging.getLogger("fedsim.edge.server").info("%s received: stopping", got[0] if got else "stop")
    server.stop(grace=grace_s)


class Mode(StrEnum):
    """Where the model runs."""

    local = "local"
    offload = "offload"
    split = "split"  # type: ignore[assignment]  # shadows str.split; the mode's name on the command line
    adaptive = "adaptive"


class Objective(StrEnum):
    """What the adaptive mode minimises."""

    latency = "latency"
    energy = "energy"


DEFAULT_OBJECTIVE = Objective(WORKER.objective)


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
    if summary["mode"] == "adaptive":
        chosen = ", ".join(f"{name} {n}" for name, n in summary["choices"].items())
        console.print(f"chosen: {chosen}; {summary['probes']} probes", highlight=False)
    for error in summary["errors"]:
        console.print(f"[red]failed:[/red] {error}", highlight=False)


def worker(
    mode: Annotated[
        Mode,
        typer.Option(
            help="local: whole model here; offload: JPEG to server; split: head here; adaptive: "
            "per request, the one predicted best for the link as measured."
        ),
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
    trace: Annotated[
        str | None, typer.Option(help="Bandwidth trace the shaper replays in real time (name or CSV).")
    ] = None,
    interval: Annotated[
        float | None,
        typer.Option(
            help="With --trace: request i meets the link of trace time i x INTERVAL s (no waiting).",
            min=0.001,
        ),
    ] = None,
    channels: Annotated[
        int | None, typer.Option("--channels", "-C", help="Bottleneck width C (split).")
    ] = None,
    objective: Annotated[
        Objective, typer.Option(help="What --mode adaptive minimises per request.")
    ] = DEFAULT_OBJECTIVE,
    probe_s: Annotated[
        float,
        typer.Option(help="Adaptive: probe the link after this many s without a remote request.", min=0.01),
    ] = WORKER.probe_s,
    requests: Annotated[int, typer.Option(help="Measured requests.", min=1)] = WORKER.requests,
    warmup: Annotated[int, typer.Option(help="Unmeasured requests first.", min=0)] = WORKER.warmup,
    meter: Annotated[
        str, typer.Option(help="Power meter: auto, model, rapl, jtop, ina219, nvml, csv.")
    ] = WORKER.meter,
    meter_csv: Annotated[Path | None, typer.Option(help="USB power meter log for --meter csv.")] = None,
    meter_period: Annotated[float, typer.Option(help="Meter sample period in seconds.", min=0.001)] = (
        WORKER.meter_period_s
    ),
    stream: Annotated[
        bool, typer.Option("--stream", help="Bidirectional stream instead of unary calls.")
    ] = WORKER.stream,
    jpeg_quality: Annotated[
        int, typer.Option(help="JPEG quality (offload).", min=1, max=100)
    ] = WORKER.jpeg_quality,
    timeout: Annotated[
        float, typer.Option(help="Deadline of each call in seconds.", min=0.001)
    ] = WORKER.timeout_s,
    retries: Annotated[
        int, typer.Option(help="Retries when the server is unavailable.", min=0)
    ] = WORKER.retries,
    seed: Annotated[int, typer.Option(help="Shaper seed (jitter, loss).")] = 0,
    threads: Annotated[int, typer.Option(help="onnxruntime threads on this device.", min=1)] = WORKER.threads,
    model: Annotated[
        Path | None, typer.Option(help="Local ONNX folder (default: fetched from the server).")
    ] = None,
    tls_ca: Annotated[Path | None, typer.Option(help="CA certificate of a TLS server.")] = None,
    token_file: Annotated[Path | None, typer.Option(help="File holding the server's bearer token.")] = None,
) -> None:
    """Run inference requests against a tail server (or locally) and measure every stage."""
    from rich.progress import Progress

    from fedsim.edge.worker import Worker, WorkerConfig

    config = WorkerConfig(
        mode=mode.value,
        server=server,
        model_dir=model,
        device=device,
        emulate=emulate,
        network=None if network in ("none", "") else network,
        trace=trace,
        interval_s=interval,
        channels=channels,
        objective=objective.value,
        probe_s=probe_s,
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
        token=read_token(token_file),
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


def health(
    server: Annotated[str, typer.Option(help="HOST:PORT of fedsim edge serve.")] = "127.0.0.1:50051",
    tls_ca: Annotated[Path | None, typer.Option(help="CA certificate of a TLS server.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.", min=0.01)] = 3.0,
) -> None:
    """Ask the server's standard gRPC health service; exit 0 when it is SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from fedsim.edge.proto import SERVICE

    if tls_ca is not None:
        existing(tls_ca, "--tls-ca", "a CA certificate")
        creds = grpc.ssl_channel_credentials(root_certificates=tls_ca.read_bytes())
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
