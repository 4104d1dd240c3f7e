"""Edge transport: gRPC overhead per request, throughput with concurrent workers, meter cost.

Everything on loopback, in one process run, against baselines measured in the same run:

1. **Overhead per request** at 1 KB, 10 KB, 100 KB and 1 MB payloads (float32 tensors,
   codec ``none``), unary ``Infer`` and streaming ``InferStream``: the client's round trip
   minus the server's own time (``timings.total_ms``), p50 and p90. Baseline: a plain TCP
   socket round trip of the same payload (length-prefixed, 8-byte answer); the ratio says
   what gRPC and protobuf add on top of the kernel's loopback.
2. **Throughput** with 1, 4 and 8 concurrent workers (threads, one channel each, 10 KB
   payload, server with 4 compute workers): requests per second, ratio against 1 worker.
3. **Meter cost**: CPU seconds of the utilisation model's sampling thread at 10 Hz, as a
   share of one core.

The served model is synthetic (a tail that pools each channel and applies a linear layer,
one per payload size, exported with fedsim's own ONNX exporter) so payload sizes are exact.
Targets (issue 5): overhead p50 <= 1 ms up to 100 KB; meter < 2% of one core. Run:

    python benchmarks/edge_transport.py [--requests 300] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedsim.edge.codec import CODECS
from fedsim.edge.onnx_export import export_module
from fedsim.edge.proto import pb
from fedsim.edge.server import ServerConfig, TailServer
from fedsim.edge.wire import tensor_message

#: payload label -> channels of a [C, 16, 16] float32 tensor (C * 1 KiB)
SIZES = {"1 KB": 1, "10 KB": 10, "100 KB": 100, "1 MB": 1024}


class PoolLinear(nn.Module):
    """A cheap tail: global average pool per channel, then a linear layer to 10 logits."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, 10)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z.mean(dim=(2, 3)))


def synthetic_model(folder: Path) -> Path:
    """An ONNX folder with one tail per payload size and a tiny whole model."""
    models = []
    for c in SIZES.values():
        export_module(
            PoolLinear(c), torch.zeros(1, c, 16, 16), folder / f"C{c}" / "tail.onnx", "bottleneck", "logits"
        )
        export_module(
            nn.Conv2d(3, c, 1),
            torch.zeros(1, 3, 16, 16),
            folder / f"C{c}" / "head.onnx",
            "image",
            "bottleneck",
        )
        models.append(
            {"C": c, "head": f"C{c}/head.onnx", "tail": f"C{c}/tail.onnx", "bottleneck_shape": [c, 16, 16]}
        )
    full = nn.Sequential(nn.Conv2d(3, 4, 1), PoolLinear(4))
    export_module(full, torch.zeros(1, 3, 16, 16), folder / "teacher.onnx", "image", "logits")
    manifest = {
        "name": "synthetic", "split": "none", "codec": "none", "input_shape": [3, 16, 16],
        "mean": [0.5] * 3, "std": [0.25] * 3, "class_names": [str(i) for i in range(10)],
        "full": {"file": "teacher.onnx"}, "models": models, "data": {},
    }  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def request_bytes(channels: int) -> bytes:
    z = torch.randn(channels, 16, 16)
    return pb.InferRequest(
        request_id=1, features=tensor_message(CODECS.get("none").encode(z))
    ).SerializeToString()


def grpc_overhead(port: int, payload: bytes, n: int, stream: bool) -> list[float]:
    """Round trip minus server time (ms) for n requests after 20 warm-ups, on one reused channel."""
    import grpc

    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}",
        options=[("grpc.max_send_message_length", 8 << 20), ("grpc.max_receive_message_length", 8 << 20)],
    )
    out = []
    if stream:
        import queue

        q: queue.Queue = queue.Queue()
        call = channel.stream_stream("/fedsim.edge.v1.EdgeInference/InferStream", None, None)
        replies = call(iter(q.get, None))
        for i in range(n + 20):
            t0 = time.perf_counter()
            q.put(payload)
            reply = pb.InferReply.FromString(next(replies))
            rtt = (time.perf_counter() - t0) * 1e3
            if i >= 20:
                out.append(rtt - reply.timings.total_ms)
        q.put(None)
    else:
        call = channel.unary_unary("/fedsim.edge.v1.EdgeInference/Infer", None, None)
        for i in range(n + 20):
            t0 = time.perf_counter()
            reply = pb.InferReply.FromString(call(payload, timeout=10))
            rtt = (time.perf_counter() - t0) * 1e3
            if i >= 20:
                out.append(rtt - reply.timings.total_ms)
    channel.close()
    return out


def socket_round_trips(payload: bytes, n: int) -> list[float]:
    """Baseline: TCP on loopback, length-prefixed payload to a thread that answers 8 bytes."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                head = conn.recv(4, socket.MSG_WAITALL)
                if len(head) < 4:
                    return
                (size,) = struct.unpack("!I", head)
                got = 0
                while got < size:
                    got += len(conn.recv(min(1 << 20, size - got)))
                conn.sendall(b"8 bytes!")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = socket.create_connection(("127.0.0.1", port))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frame = struct.pack("!I", len(payload)) + payload
    out = []
    for i in range(n + 20):
        t0 = time.perf_counter()
        client.sendall(frame)
        client.recv(8, socket.MSG_WAITALL)
        if i >= 20:
            out.append((time.perf_counter() - t0) * 1e3)
    client.close()
    thread.join(5)
    server.close()
    return out


def throughput(port: int, payload: bytes, workers: int, seconds: float) -> float:
    """Requests per second from ``workers`` threads, one channel each, for ``seconds``."""
    import grpc

    counts = [0] * workers
    stop = time.perf_counter() + seconds

    def loop(k: int) -> None:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        call = channel.unary_unary("/fedsim.edge.v1.EdgeInference/Infer", None, None)
        for _ in range(5):
            call(payload, timeout=10)
        while time.perf_counter() < stop:
            call(payload, timeout=10)
            counts[k] += 1
        channel.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="measured requests per size and mode")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    args = parser.parse_args()
    from fedsim.edge.power import measure_overhead

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = synthetic_model(Path(tmp))
        with TailServer(folder, ServerConfig(port=0, workers=4, max_message_bytes=4 << 20)) as srv:
            print("ms; ratio = gRPC overhead p50 / TCP socket round trip p50")
            print(f"{'payload':>8} {'socket p50':>11} {'unary p50':>10} {'p90':>7} {'ratio':>6} "
                  f"{'stream p50':>11} {'p90':>7} {'ratio':>6}")  # fmt: skip
            for label, c in SIZES.items():
                payload = request_bytes(c)
                base = float(np.median(socket_round_trips(payload[: c * 1024], args.requests)))
                cells = []
                for stream in (False, True):
                    o = grpc_overhead(srv.port, payload, args.requests, stream)
                    p50, p90 = np.percentile(o, [50, 90])
                    cells.append(f"{p50:10.3f} {p90:7.3f} {p50 / base:6.2f}")
                print(f"{label:>8} {base:11.3f} {cells[0]} {cells[1].rjust(27)}")
            payload = request_bytes(SIZES["10 KB"])
            one = throughput(srv.port, payload, 1, args.seconds)
            print(f"\nthroughput, 10 KB payload, server with 4 compute workers ({srv.config.workers}):")
            print(f"{'workers':>8} {'req/s':>8} {'vs 1':>6}")
            for n in (1, 4, 8):
                rps = one if n == 1 else throughput(srv.port, payload, n, args.seconds)
                print(f"{n:8d} {rps:8.0f} {rps / one:6.2f}")
    m = measure_overhead("model", "this-host", seconds=args.seconds, period_s=0.1)
    print(
        f"\nmeter 'model' at 10 Hz: {m['sampler_cpu_s'] * 1e3:.1f} ms CPU in {m['seconds']:.1f} s = "
        f"{100 * m['overhead_fraction_of_core']:.2f}% of one core (target < 2%)"
    )


if __name__ == "__main__":
    main()
