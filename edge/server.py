"""The tail server: serves a BottleFit split's tail (and the whole model) over gRPC.

``fedsim edge serve RUN_OR_ONNX_DIR`` loads the ONNX files that ``fedsim edge export``
wrote (every split C's tail and the unmodified whole model) into onnxruntime and answers:

- ``Infer`` / ``InferStream`` with a bottleneck tensor: the tail of the split whose
  bottleneck has that many channels (split computing);
- ``Infer`` / ``InferStream`` with a JPEG: the whole model (edge offloading);
- ``Info``: the served model, splits, codec, limits and dataset spec; ``GetModel``: the
  head or whole-model ONNX file, so a device needs nothing but the server's address;
- the standard ``grpc.health.v1.Health`` service.

Compute runs on at most ``workers`` requests at once (a semaphore; the gRPC thread pool is
larger so that waiting requests are timed as queue time), and at most ``queue_limit``
calls are accepted at once (RESOURCE_EXHAUSTED beyond). Requests larger than
``max_message_bytes`` get RESOURCE_EXHAUSTED; malformed ones INVALID_ARGUMENT; a missing or
wrong bearer token UNAUTHENTICATED; a request whose deadline passed while it waited is not
computed (DEADLINE_EXCEEDED). Each failure is logged as one line and the server goes on.

With ``device`` set to a profile other than ``this-host``, replies also carry the compute
time scaled to that device (``compute_emulated_ms``, see :mod:`fedsim.edge.calibrate`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from fedsim.edge.onnx_export import ort_session
from fedsim.edge.proto import SERVICE, pb, rpc
from fedsim.edge.wire import BadInput, decode_tensor, jpeg_decode, preprocess
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedsim.errors import UserError

log = logging.getLogger("fedsim.edge.server")

#: Slack above ``max_message_bytes`` given to gRPC itself, so that an oversized request
#: still reaches the handler, which rejects it with a message and a log line.
_GRPC_SLACK = 1 << 20
_CHUNK = 1 << 20
_HEALTH_PREFIX = "/grpc.health.v1.Health/"


def ms_since(t0: float) -> float:
    """Milliseconds on the monotonic clock since ``t0`` (a ``time.perf_counter()`` value)."""
    return (time.perf_counter() - t0) * 1e3


@dataclass(frozen=True)
class ServerConfig:
    """How a tail server runs.

    Attributes
    ----------
    host, port : str, int
        Address to listen on (port 0: any free port; :attr:`TailServer.port` tells which).
    workers : int
        Requests computed at once.
    threads : int
        onnxruntime intra-op threads per session.
    max_message_bytes : int
        Largest request accepted (and largest reply chunk sent).
    max_batch : int
        Largest batch in one tensor.
    queue_limit : int
        Calls accepted at once (computing or waiting); beyond, RESOURCE_EXHAUSTED.
    device : str
        Device profile whose speed the replies' ``compute_emulated_ms`` assumes.
    tls_cert, tls_key : Path, optional
        PEM files; both or neither.
    token : str, optional
        Bearer token every call except health checks must carry.
    """

    host: str = "127.0.0.1"
    port: int = 50051
    workers: int = 4
    threads: int = 1
    max_message_bytes: int = 4 << 20
    max_batch: int = 64
    queue_limit: int = 256
    device: str = "this-host"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = None


# ------------------------------------------------------------------------------ model


def resolve_model_dir(path: Path) -> Path:
    """The ONNX folder of ``path``: itself with ``manifest.json``, else ``RUN/onnx`` (exported if needed)."""
    from fedsim.edge.onnx_export import MANIFEST_FILE, export_run

    if (path / MANIFEST_FILE).is_file():
        return path
    if not path.is_dir():
        raise UserError(
            f"{path}: no such folder; expected an ONNX folder (fedsim edge export) or an edge run"
        )
    if (path / "onnx" / MANIFEST_FILE).is_file():
        return path / "onnx"
    if (path / "experiment.yaml").is_file():
        export_run(path, path / "onnx")
        return path / "onnx"
    raise UserError(
        f"{path}: neither manifest.json nor an edge run (experiment.yaml); run fedsim edge export"
    )


@dataclass
class ModelFile:
    """An ONNX file the server can hand to a device."""

    path: Path
    sha256: str
    nbytes: int

    @classmethod
    def of(cls, path: Path) -> ModelFile:
        data = path.read_bytes()
        return cls(path, hashlib.sha256(data).hexdigest(), len(data))


class ServedModel:
    """The exported split models: tails by bottleneck width, and the whole model."""

    def __init__(self, folder: Path, threads: int = 1) -> None:
        from fedsim.edge.onnx_export import MANIFEST_FILE

        self.folder = folder
        self.manifest: dict[str, Any] = json.loads((folder / MANIFEST_FILE).read_text())
        if "full" not in self.manifest:
            raise UserError(
                f"{folder}: manifest has no whole model (exported by an older fedsim); export again"
            )
        self.input_shape = tuple(self.manifest["input_shape"])
        self.mean = tuple(self.manifest["mean"])
        self.std = tuple(self.manifest["std"])
        self.tails: dict[int, Any] = {}
        self.heads: dict[int, ModelFile] = {}
        self.bottlenecks: dict[int, tuple[int, ...]] = {}
        for m in self.manifest["models"]:
            c = int(m["C"])
            self.tails[c] = ort_session(folder / m["tail"], threads)
            self.heads[c] = ModelFile.of(folder / m["head"])
            self.bottlenecks[c] = tuple(m["bottleneck_shape"])
        self.full_file = ModelFile.of(folder / self.manifest["full"]["file"])
        self.full = ort_session(self.full_file.path, threads)

    def run_tail(self, z: np.ndarray) -> np.ndarray:
        """Logits of the tail whose input has ``z.shape[1]`` channels."""
        session = self.tails[z.shape[1]]
        return session.run(None, {session.get_inputs()[0].name: z})[0]

    def run_full(self, x: np.ndarray) -> np.ndarray:
        """Logits of the whole model on a normalised batch."""
        return self.full.run(None, {self.full.get_inputs()[0].name: x})[0]


# ---------------------------------------------------------------------------- service


def _peer(context: grpc.ServicerContext) -> str:
    try:
        return context.peer()
    except Exception:
        return "?"


class EdgeService(rpc.EdgeInferenceServicer):
    """The ``EdgeInference`` service over a :class:`ServedModel`."""

    def __init__(self, model: ServedModel, config: ServerConfig, time_scale: float) -> None:
        self.model = model
        self.config = config
        self.time_scale = time_scale
        self.slots = threading.Semaphore(config.workers)
        self.failures = 0
        self._lock = threading.Lock()

    # -- helpers
    def _fail(self, method: str, request_id: int, context: grpc.ServicerContext, err: BadInput) -> None:
        with self._lock:
            self.failures += 1
        log.warning(
            "%s %s request %d from %s: %s", err.code.name, method, request_id, _peer(context), err.message
        )

    def _serve(self, request: pb.InferRequest, context: grpc.ServicerContext) -> pb.InferReply:
        """Answer one request; raises :class:`BadInput` for anything the server refuses."""
        t0 = time.perf_counter()
        size = request.ByteSize()
        if size > self.config.max_message_bytes:
            raise BadInput(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request of {size} bytes exceeds the server's limit of "
                f"{self.config.max_message_bytes} bytes",
            )
        kind = request.WhichOneof("input")
        if kind is None:
            raise BadInput(
                grpc.StatusCode.INVALID_ARGUMENT, "request has no input; expected features or image"
            )
        with self.slots:
            queue_ms = ms_since(t0)
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                raise BadInput(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"deadline passed after {queue_ms:.1f} ms in the queue; not computed",
                )
            t1 = time.perf_counter()
            if kind == "features":
                x = decode_tensor(request.features, self.model.bottlenecks, self.config.max_batch)
                run: Callable[[np.ndarray], np.ndarray] = self.model.run_tail
            else:
                if request.image.format.lower() not in ("jpeg", "jpg"):
                    raise BadInput(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"unknown image format {request.image.format!r}; expected jpeg",
                    )
                raw = jpeg_decode(request.image.data, self.model.input_shape)
                x = preprocess(raw, self.model.mean, self.model.std)
                run = self.model.run_full
            t2 = time.perf_counter()
            logits = run(x)
            t3 = time.perf_counter()
        compute_ms = (t3 - t2) * 1e3
        reply = pb.InferReply(
            request_id=request.request_id,
            logits=logits[0].tolist(),
            prediction=int(np.argmax(logits[0])),
        )
        reply.timings.queue_ms = queue_ms
        reply.timings.decode_ms = (t2 - t1) * 1e3
        reply.timings.compute_ms = compute_ms
        reply.timings.compute_emulated_ms = compute_ms * self.time_scale
        reply.timings.total_ms = ms_since(t0)
        return reply

    # -- RPCs
    def Info(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> pb.InfoReply:
        from fedsim.edge.codec import CODECS

        m = self.model.manifest
        return pb.InfoReply(
            model=m["name"],
            split=m.get("split", ""),
            codec=m["codec"],
            codecs=CODECS.names(),
            splits=[
                pb.SplitInfo(
                    channels=c,
                    bottleneck_shape=self.model.bottlenecks[c],
                    head_sha256=self.model.heads[c].sha256,
                    head_bytes=self.model.heads[c].nbytes,
                )
                for c in sorted(self.model.tails)
            ],
            input_shape=self.model.input_shape,
            max_message_bytes=self.config.max_message_bytes,
            workers=self.config.workers,
            max_batch=self.config.max_batch,
            data_json=json.dumps(m.get("data", {})),
            mean=self.model.mean,
            std=self.model.std,
            class_names=m.get("class_names", []),
            device=self.config.device,
            full_sha256=self.model.full_file.sha256,
            full_bytes=self.model.full_file.nbytes,
            token_required=self.config.token is not None,
        )

    def Infer(self, request: pb.InferRequest, context: grpc.ServicerContext) -> pb.InferReply:
        try:
            return self._serve(request, context)
        except BadInput as err:
            self._fail("Infer", request.request_id, context, err)
            context.abort(err.code, err.message)
            raise AssertionError("unreachable") from None  # context.abort raises

    def InferStream(
        self, requests: Iterator[pb.InferRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.InferReply]:
        for request in requests:
            try:
                yield self._serve(request, context)
            except BadInput as err:
                self._fail("InferStream", request.request_id, context, err)
                yield pb.InferReply(
                    request_id=request.request_id, error_code=err.code.value[0], error_message=err.message
                )

    def GetModel(self, request: pb.ModelRequest, context: grpc.ServicerContext) -> Iterator[pb.ModelChunk]:
        if request.part == "full":
            file = self.model.full_file
        elif request.part == "head" and request.channels in self.model.heads:
            file = self.model.heads[request.channels]
        else:
            err = BadInput(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"no model part {request.part!r} with C={request.channels}; expected 'full' or 'head' "
                f"with C in {sorted(self.model.heads)}",
            )
            self._fail("GetModel", 0, context, err)
            context.abort(err.code, err.message)
        data = file.path.read_bytes()
        chunk = min(_CHUNK, self.config.max_message_bytes // 2)
        for start in range(0, len(data), chunk):
            yield pb.ModelChunk(data=data[start : start + chunk], sha256=file.sha256, total_bytes=len(data))


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` (health checks excepted)."""

    def __init__(self, token: str, service: EdgeService) -> None:
        self.expected = f"Bearer {token}".encode()
        self.service = service

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        if details.method.startswith(_HEALTH_PREFIX):
            return continuation(details)
        given = dict(details.invocation_metadata or ()).get("authorization")
        if given is not None and hmac.compare_digest(str(given).encode(), self.expected):
            return continuation(details)
        why = "missing bearer token" if given is None else "wrong bearer token"
        with self.service._lock:
            self.service.failures += 1
        log.warning("UNAUTHENTICATED %s: %s", details.method, why)

        def deny(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED, f"{why}; expected metadata 'authorization: Bearer <token>'"
            )

        handler = continuation(details)
        if handler is not None and handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(lambda it, ctx: deny(None, ctx))
        if handler is not None and handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)


# ----------------------------------------------------------------------------- server


def grpc_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel/server options: message limits from configuration, both directions."""
    return [
        ("grpc.max_send_message_length", max_message_bytes + _GRPC_SLACK),
        ("grpc.max_receive_message_length", max_message_bytes + _GRPC_SLACK),
    ]


def _device_scale(device: str) -> float:
    from fedsim.edge.calibrate import calibrate, time_scale

    from fedsim.system.profiles import DEVICES

    profile = DEVICES.get(device)
    return 1.0 if profile.gflops is None else time_scale(profile, calibrate())


class TailServer:
    """A running gRPC tail server (start with :meth:`start`, end with :meth:`stop`)."""

    def __init__(self, model_dir: Path, config: ServerConfig) -> None:
        if (config.tls_cert is None) != (config.tls_key is None):
            raise UserError("TLS needs both --tls-cert and --tls-key")
        from fedsim.system.profiles import DEVICES

        if config.device not in DEVICES:
            raise UserError(f"unknown device {config.device!r}; expected one of {', '.join(DEVICES.names())}")
        self.config = config
        self.model = ServedModel(resolve_model_dir(model_dir), config.threads)
        self.service = EdgeService(self.model, config, _device_scale(config.device))
        self.port = 0
        self._server: grpc.Server | None = None
        self.health = health.HealthServicer()

    def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        c = self.config
        interceptors = [TokenInterceptor(c.token, self.service)] if c.token else []
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2 * c.workers + 8, thread_name_prefix="edge-serve"),
            interceptors=interceptors,
            options=grpc_options(c.max_message_bytes),
            maximum_concurrent_rpcs=c.queue_limit,
        )
        rpc.add_EdgeInferenceServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = f"{c.host}:{c.port}"
        if c.tls_cert is not None and c.tls_key is not None:
            creds = grpc.ssl_server_credentials([(c.tls_key.read_bytes(), c.tls_cert.read_bytes())])
            port = server.add_secure_port(address, creds)
        else:
            port = server.add_insecure_port(address)
        if port == 0:
            raise UserError(f"cannot listen on {address} (port in use or not allowed)")
        server.start()
        for name in ("", SERVICE):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server, self.port = server, port
        log.info("serving %s on %s:%d (%d workers)", self.model.manifest["name"], c.host, port, c.workers)
        return port

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving (in-flight calls get ``grace`` seconds); idempotent."""
        if self._server is not None:
            self.health.enter_graceful_shutdown()
            self._server.stop(grace).wait()
            self._server = None

    def wait(self) -> None:
        """Block until the server stops."""
        if self._server is not None:
            self._server.wait_for_termination()

    def __enter__(self) -> TailServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
