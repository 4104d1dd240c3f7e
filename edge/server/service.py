"""The ``EdgeInference`` gRPC service over the served models, and the bearer-token check."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np

from fedsim.edge.codec import CODECS
from fedsim.edge.proto import pb, rpc
from fedsim.edge.server.config import ServerConfig
from fedsim.edge.server.model import ServedModel
from fedsim.edge.wire import BadInput, decode_tensor, jpeg_decode, preprocess

log = logging.getLogger("fedsim.edge.server")

_CHUNK = 1 << 20
_HEALTH_PREFIX = "/grpc.health.v1.Health/"


def ms_since(t0: float) -> float:
    """Milliseconds on the monotonic clock since ``t0`` (a ``time.perf_counter()`` value)."""
    return (time.perf_counter() - t0) * 1e3


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
        #: calls being answered now, and answered in all (read when draining)
        self.in_flight = 0
        self.answered = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        """Count one call in flight while it is answered."""
        with self._lock:
            self.in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1
                self.answered += 1

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
            with self._call():
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
                with self._call():
                    reply = self._serve(request, context)
                yield reply
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
