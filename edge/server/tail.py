"""The running gRPC tail server (:class:`TailServer`): binds, serves, stops."""

from __future__ import annotations

import logging
from concurrent import futures
from contextlib import ExitStack
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedsim.edge.calibrate import calibrate, time_scale
from fedsim.edge.proto import SERVICE, rpc
from fedsim.edge.quiet_gc import frozen_heap
from fedsim.edge.server.config import ServerConfig
from fedsim.edge.server.model import ServedModel, resolve_model_dir
from fedsim.edge.server.service import EdgeService, TokenInterceptor
from fedsim.edge.wire import grpc_options
from fedsim.errors import UserError
from fedsim.system.profiles import DEVICES

log = logging.getLogger("fedsim.edge.server")


def _device_scale(device: str) -> float:
    profile = DEVICES.get(device)
    return 1.0 if profile.gflops is None else time_scale(profile, calibrate())


class TailServer:
    """A running gRPC tail server (start with :meth:`start`, end with :meth:`stop`)."""

    def __init__(self, model_dir: Path, config: ServerConfig) -> None:
        if (config.tls_cert is None) != (config.tls_key is None):
            raise UserError("TLS needs both --tls-cert and --tls-key")
        if config.device not in DEVICES:
            raise UserError(f"unknown device {config.device!r}; expected one of {', '.join(DEVICES.names())}")
        self.config = config
        self.model = ServedModel(resolve_model_dir(model_dir), config.threads)
        self.service = EdgeService(self.model, config, _device_scale(config.device))
        self.port = 0
        self._server: grpc.Server | None = None
        self._frozen = ExitStack()
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
        self._frozen.enter_context(frozen_heap())  # the models and libraries out of the collector's scans
        for name in ("", SERVICE):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server, self.port = server, port
        log.info("serving %s on %s:%d (%d workers)", self.model.manifest["name"], c.host, port, c.workers)
        return port

    def stop(self, grace: float | None = 1.0) -> None:
        """Drain and stop; idempotent. Health turns NOT_SERVING first, new calls are refused,
        the calls in flight get ``grace`` seconds to finish; the drain is logged."""
        if self._server is not None:
            self.health.enter_graceful_shutdown()  # NOT_SERVING for every service
            svc = self.service
            before, answered = svc.in_flight, svc.answered
            log.info(
                "draining: health NOT_SERVING, new calls refused, %d in flight, up to %s s for them",
                before,
                "unlimited" if grace is None else f"{grace:g}",
            )
            self._server.stop(grace).wait()
            self._server = None
            self._frozen.close()
            finished = svc.answered - answered
            log.info(
                "stopped: %d of %d calls in flight finished, %d cut off", finished, before, svc.in_flight
            )

    def wait(self) -> None:
        """Block until the server stops."""
        if self._server is not None:
            self._server.wait_for_termination()

    def __enter__(self) -> TailServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
