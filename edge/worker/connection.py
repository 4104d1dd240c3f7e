"""The worker's channel to the tail server, and sending a request with shaping and retries.

A call that fails with UNAVAILABLE (server gone, restarting), CANCELLED (a server shutting
down cancels the calls it has not answered; the worker itself never cancels one) or
RESOURCE_EXHAUSTED (a full queue) is retried up to ``retries`` times (an inference is
idempotent), with exponential backoff and jitter spread over
the request's deadline (``timeout_s``, see :func:`backoff_s`); other statuses fail the
request at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from fedsim.edge.power import Meter
from fedsim.edge.proto import SERVICE, pb
from fedsim.edge.shaper import Shaper
from fedsim.edge.wire import grpc_options
from fedsim.edge.worker.config import WorkerConfig
from fedsim.errors import UserError

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED)
#: The shortest time an attempt is given, even when the deadline is (nearly) reached.
MIN_ATTEMPT_S = 0.05
_JITTER = random.Random()


class Connection:
    """A reused channel to the tail server with raw-bytes calls, so serialisation is timed apart."""

    def __init__(self, config: WorkerConfig) -> None:
        assert config.server is not None
        self.address = config.server
        self.config = config
        # reconnect quickly after a server restart (gRPC's default first backoff is 1 s)
        options = [
            *grpc_options(256 << 20),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        if config.tls_ca is not None:
            if not config.tls_ca.is_file():
                raise UserError(
                    f"--tls-ca {config.tls_ca}: no such file; expected the server's CA certificate"
                )
            creds = grpc.ssl_channel_credentials(root_certificates=config.tls_ca.read_bytes())
            self.channel = grpc.secure_channel(self.address, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(self.address, options=options)
        self.metadata = (("authorization", f"Bearer {config.token}"),) if config.token else ()
        self.infer = self.channel.unary_unary(
            f"/{SERVICE}/Infer", request_serializer=None, response_deserializer=None
        )
        self._stream_call = self.channel.stream_stream(
            f"/{SERVICE}/InferStream", request_serializer=None, response_deserializer=None
        )
        self._info = self.channel.unary_unary(
            f"/{SERVICE}/Info",
            request_serializer=pb.InfoRequest.SerializeToString,
            response_deserializer=pb.InfoReply.FromString,
        )
        self._info_raw = self.channel.unary_unary(
            f"/{SERVICE}/Info", request_serializer=None, response_deserializer=None
        )
        self._model = self.channel.unary_stream(
            f"/{SERVICE}/GetModel",
            request_serializer=pb.ModelRequest.SerializeToString,
            response_deserializer=pb.ModelChunk.FromString,
        )
        self._stream: _Stream | None = None

    def _explain(self, err: grpc.RpcError) -> UserError:
        code = err.code()
        reach = "is fedsim edge serve running there, with matching TLS settings (--tls-ca)?"
        hint = {
            grpc.StatusCode.UNAVAILABLE: reach,
            grpc.StatusCode.DEADLINE_EXCEEDED: f"no answer within {self.config.timeout_s:g} s; {reach}",
            grpc.StatusCode.UNAUTHENTICATED: "pass the server's token with --token-file",
        }.get(code, "")
        return UserError(f"edge server {self.address}: {code.name}: {err.details()}; {hint}".rstrip("; "))

    def info(self) -> pb.InfoReply:
        """The server's Info (waits up to the timeout for the server to come up)."""
        try:
            return self._info(
                pb.InfoRequest(), timeout=self.config.timeout_s, metadata=self.metadata, wait_for_ready=True
            )
        except grpc.RpcError as err:
            raise self._explain(err) from None

    def probe(self, pad_bytes: int, shaper: Shaper, meter: Meter) -> tuple[float, int]:
        """One shaped ``Info`` call whose request carries ``pad_bytes`` of padding; (ms, reply bytes).

        The padding is an unknown protobuf field, which the server parses and ignores.
        """
        t0 = time.monotonic()
        try:
            reply = shaped_exchange(
                padded_info_request(pad_bytes),
                lambda r: self._info_raw(r, timeout=self.config.timeout_s, metadata=self.metadata),
                shaper,
                meter,
            )
        except grpc.RpcError as err:
            raise self._explain(err) from None
        return (time.monotonic() - t0) * 1e3, len(reply)

    def fetch(self, part: str, channels: int, sha256: str) -> Path:
        """The ONNX file of ``part`` (cached by content hash in ``cache_dir()/edge-models``)."""
        from fedsim.cache import cache_dir

        path = cache_dir() / "edge-models" / f"{sha256}.onnx"
        if path.is_file():
            return path
        try:
            data = b"".join(
                c.data
                for c in self._model(
                    pb.ModelRequest(part=part, channels=channels), timeout=120, metadata=self.metadata
                )
            )
        except grpc.RpcError as err:
            raise self._explain(err) from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise UserError(
                f"edge server {self.address}: the {part} model arrived corrupted (sha256 mismatch)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return path

    def stream(self) -> _Stream:
        """The open bidirectional stream (opened on first use, reopened after a failure)."""
        if self._stream is None:
            self._stream = _Stream(self._stream_call, self.metadata)
        return self._stream

    def drop_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def close(self) -> None:
        self.drop_stream()
        self.channel.close()


class _Stream:
    """One ``InferStream`` call used in lockstep: send a request, read its reply."""

    _END = object()

    def __init__(self, call: Callable[..., Any], metadata: tuple) -> None:
        self._requests: queue.Queue[Any] = queue.Queue()
        # a gRPC streaming call: an iterator of replies that also has cancel()
        self._replies: Any = call(iter(self._requests.get, self._END), metadata=metadata)

    def exchange(self, request: bytes) -> bytes:
        self._requests.put(request)
        return next(self._replies)

    def close(self) -> None:
        self._requests.put(self._END)
        with contextlib.suppress(Exception):  # already ended
            self._replies.cancel()


def shaped_exchange(request: bytes, call: Callable[[bytes], bytes], shaper: Shaper, meter: Meter) -> bytes:
    """``request`` over the shaped uplink, ``call`` (the server's answer), the reply over the
    shaped downlink; the meter's radio is on for the two transfers only."""
    try:
        meter.radio(True)
        shaper.uplink(len(request))
        meter.radio(False)
        reply = call(request)
        meter.radio(True)
        shaper.downlink(len(reply))
        return reply
    finally:
        meter.radio(False)


#: The field number of a probe's padding: unknown to ``InfoRequest``, so the server skips it.
PAD_FIELD = 15


def padded_info_request(pad_bytes: int) -> bytes:
    """A serialised ``InfoRequest`` with ``pad_bytes`` bytes of payload in an unknown field."""
    if pad_bytes <= 0:
        return b""
    length, varint = pad_bytes, bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([PAD_FIELD << 3 | 2]) + bytes(varint) + bytes(pad_bytes)


def send(
    conn: Connection, request: bytes, shaper: Shaper, meter: Meter, config: WorkerConfig
) -> tuple[bytes | None, int, str, float]:
    """Send ``request`` (shaped, retried); returns (reply, attempts, error, seconds in the call).

    The request has ``timeout_s`` in all: each attempt gets the time left, and the retries'
    waits (:func:`backoff_s`) are spread over that deadline, so an outage of the server
    shorter than the deadline costs time, not the request.
    """
    cfg = config
    attempts, error = 0, ""
    t0 = time.monotonic()
    deadline = t0 + cfg.timeout_s
    while True:
        attempts += 1

        def unary(r: bytes) -> bytes:  # the attempt gets the time left after the uplink
            left = max(deadline - time.monotonic(), MIN_ATTEMPT_S)
            return conn.infer(r, timeout=left, metadata=conn.metadata)

        try:
            call = conn.stream().exchange if cfg.stream else unary
            reply = shaped_exchange(request, call, shaper, meter)
            return reply, attempts, "", time.monotonic() - t0
        except (grpc.RpcError, StopIteration) as err:
            code = err.code() if isinstance(err, grpc.RpcError) else grpc.StatusCode.UNAVAILABLE
            details = err.details() if isinstance(err, grpc.RpcError) else "stream ended"
            error = f"{code.name}: {details}"
            if cfg.stream:
                conn.drop_stream()
            if code not in RETRYABLE or attempts > cfg.retries:
                return None, attempts, error, time.monotonic() - t0
            wait = backoff_s(attempts, cfg)
            if time.monotonic() + wait >= deadline:
                return (
                    None,
                    attempts,
                    f"{error} (no time left before the {cfg.timeout_s:g} s deadline)",
                    (time.monotonic() - t0),
                )
            time.sleep(wait)


def backoff_s(failed: int, cfg: WorkerConfig, rng: random.Random | None = None) -> float:
    """The wait after the ``failed``-th failed attempt: exponential, with equal jitter.

    The base step is stretched so that the ``retries`` waits together span the request's
    deadline (``timeout_s``): base = timeout / (2^retries - 1), at least ``backoff_s``; step k
    is base * 2^(k-1), at most ``max_backoff_s``; the wait is half the step plus a uniform
    draw of the other half (workers that failed together do not retry together).
    """
    base = max(cfg.backoff_s, cfg.timeout_s / max(2**cfg.retries - 1, 1))
    step = min(cfg.max_backoff_s, base * 2 ** (failed - 1))
    return step / 2 + (rng or _JITTER).uniform(0, step / 2)
