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

Layout: :mod:`~fedsim.edge.server.config` (:class:`ServerConfig`),
:mod:`~fedsim.edge.server.model` (the served ONNX models), :mod:`~fedsim.edge.server.service`
(the gRPC service and token check) and :mod:`~fedsim.edge.server.tail` (:class:`TailServer`).
Every part logs to the ``fedsim.edge.server`` logger.
"""

from fedsim.edge.server.config import ServerConfig
from fedsim.edge.server.model import ModelFile, ServedModel, resolve_model_dir
from fedsim.edge.server.service import EdgeService, TokenInterceptor, ms_since
from fedsim.edge.server.tail import TailServer
from fedsim.edge.wire import grpc_options

__all__ = [
    "EdgeService",
    "ModelFile",
    "ServedModel",
    "ServerConfig",
    "TailServer",
    "TokenInterceptor",
    "grpc_options",
    "ms_since",
    "resolve_model_dir",
]
