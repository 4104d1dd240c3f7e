"""How a tail server runs (:class:`ServerConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
