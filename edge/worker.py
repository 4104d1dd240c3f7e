"""The device worker: runs inference requests in one of three modes and measures every stage.

Modes (BottleFit's comparison, after sc2bench):

- ``local``: the whole unmodified model on the device, no network;
- ``offload``: the device sends a JPEG of the input, the server runs the whole model;
- ``split``: the device runs the head, quantises the bottleneck and sends it, the server
  runs the tail.

Per request, with monotonic clocks: ``preprocess`` (uint8 image -> normalised tensor),
``head`` (the head, or the whole model in local mode), ``encode`` (codec, or JPEG),
``serialise`` (protobuf), ``network`` (time from sending to receiving minus the server's
own time, shaped transfers included), the server's ``queue``, ``server_decode`` and
``tail`` (its compute), ``decode`` (parsing the reply), and ``total``; payload bytes (what
the codec or JPEG produced), wire bytes (the serialised request) and reply bytes; device
energy per stage from the power meter.

Emulation: device-side stages measured on this host are multiplied by the device
profile's time scale (:mod:`fedsim.edge.calibrate`); the server's compute by its own (it reports
``compute_emulated_ms``). The energy of a stage is the meter's mean power over the stage's
real window times the stage's (emulated) duration; the ``network`` stage's energy covers
the device from sending to receiving (radio power while the shaper transfers, idle power
while the server computes). ``total`` adds the emulated stages; ``host_total_ms`` is the
wall time actually spent.

Failures: a call that fails with UNAVAILABLE (server gone, restarting) or
RESOURCE_EXHAUSTED from a full queue is retried with exponential backoff up to
``retries`` times; every request ends in exactly one row, ``ok`` or not, with its number
of attempts. Other statuses (INVALID_ARGUMENT, DEADLINE_EXCEEDED, ...) fail the request at
once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from fedsim.edge.proto import SERVICE, pb
from fedsim.edge.wire import jpeg_encode, preprocess, tensor_message

from fedsim.config import METER, REQUESTS, WARMUP
from fedsim.errors import UserError
from fedsim.files import write_json
from fedsim.report.data import BENCH_STAGES, REQUESTS_FILE, SUMMARY_FILE, TRACE_FILE, percentiles

MODES = ("local", "offload", "split")
#: Stage durations (ms) in each row; the ``server_*`` and ``tail`` ones come from the reply.
STAGES = (*BENCH_STAGES, "total")
#: Device-side stages that carry energy (``network`` covers the wait for the reply).
ENERGY_STAGES = ("preprocess", "head", "encode", "serialise", "network", "decode")
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
#: Measured requests whose power samples and stage windows go to ``power_trace.json``.
TRACED_REQUESTS = 5


@dataclass(frozen=True)
class WorkerConfig:
    """One worker run.

    Attributes
    ----------
    mode : str
        ``local``, ``offload`` or ``split``.
    server : str, optional
        ``HOST:PORT`` of ``fedsim edge serve`` (required except for ``local`` with ``model_dir``).
    model_dir : Path, optional
        A local ONNX folder (``fedsim edge export``); otherwise models come from the server.
    device : str
        Device profile: its name labels the results and its power coefficients drive the
        ``model`` meter.
    emulate : bool
        Scale device-side times by the profile's calibrated speed (running on this
        machine as that device); False on the real board (``this-host`` never scales).
    network : str or dict, optional
        Network profile for the shaper (``None``: no shaping).
    channels : int, optional
        Bottleneck width C of the split (default: the smallest served).
    requests, warmup : int
        Measured requests, and unmeasured ones before them on the same channel.
    meter : str
        Power meter (``model``, ``auto``, ``rapl``, ``jtop``, ``ina219``, ``nvml``, ``csv``).
    meter_period_s : float
        Meter sample period.
    meter_csv : Path, optional
        The log for the ``csv`` meter.
    stream : bool
        Use the bidirectional stream instead of unary calls.
    jpeg_quality : int
        JPEG quality in offload mode.
    timeout_s : float
        Deadline of each call.
    retries : int
        Retries of a call that failed with UNAVAILABLE or RESOURCE_EXHAUSTED.
    backoff_s, max_backoff_s : float
        First retry delay (doubling) and its cap.
    seed : int
        Shaper seed.
    threads : int
        onnxruntime intra-op threads on the device.
    tls_ca : Path, optional
        CA certificate to trust (TLS); ``None``: plaintext.
    token : str, optional
        Bearer token.
    """

    mode: str
    server: str | None = None
    model_dir: Path | None = None
    device: str = "this-host"
    emulate: bool = True
    network: str | dict[str, Any] | None = None
    channels: int | None = None
    requests: int = REQUESTS
    warmup: int = WARMUP
    meter: str = METER
    meter_period_s: float = 0.1
    meter_csv: Path | None = None
    stream: bool = False
    jpeg_quality: int = 90
    timeout_s: float = 10.0
    retries: int = 8
    backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    seed: int = 0
    threads: int = 1
    tls_ca: Path | None = None
    token: str | None = None

    @property
    def network_name(self) -> str:
        """The link's name: a profile name, ``custom`` (a mapping) or ``none`` (no shaping, local mode)."""
        if self.mode == "local" or not self.network:
            return "none"
        return self.network if isinstance(self.network, str) else str(self.network.get("name", "custom"))

    def label(self, channels: int | None) -> str:
        """Folder name of this configuration, e.g. ``split-rpi4-wifi-C2``."""
        suffix = f"-C{channels}" if self.mode == "split" else ""
        return f"{self.mode}-{self.device}-{self.network_name}{suffix}"


# ---------------------------------------------------------------------------- channel


class Connection:
    """A reused channel to the tail server with raw-bytes calls, so serialisation is timed apart."""

    def __init__(self, config: WorkerConfig) -> None:
        from fedsim.edge.server import grpc_options

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

    def __init__(self, call: Callable[..., Iterator[bytes]], metadata: tuple) -> None:
        self._requests: queue.Queue[Any] = queue.Queue()
        self._replies = call(iter(self._requests.get, self._END), metadata=metadata)

    def exchange(self, request: bytes) -> bytes:
        self._requests.put(request)
        return next(self._replies)

    def close(self) -> None:
        self._requests.put(self._END)
        with contextlib.suppress(Exception):  # already ended
            self._replies.cancel()


# ----------------------------------------------------------------------------- models


@dataclass
class Served:
    """What the device needs: model description, ONNX paths, test images."""

    manifest: dict[str, Any]
    full_path: Path
    head_paths: dict[int, Path]
    bottlenecks: dict[int, list[int]]
    server_device: str = "this-host"


def from_folder(folder: Path) -> Served:
    """Models and description from a local ONNX folder."""
    from fedsim.edge.onnx_export import MANIFEST_FILE

    file = folder / MANIFEST_FILE
    if not file.is_file():
        raise UserError(
            f"--model {folder}: no {MANIFEST_FILE}; expected a folder written by fedsim edge export"
        )
    m = json.loads(file.read_text())
    return Served(
        manifest=m,
        full_path=folder / m["full"]["file"],
        head_paths={int(e["C"]): folder / e["head"] for e in m["models"]},
        bottlenecks={int(e["C"]): e["bottleneck_shape"] for e in m["models"]},
    )


def from_server(conn: Connection, info: pb.InfoReply, need_full: bool, channels: int | None) -> Served:
    """Models (downloaded once, cached) and description from the server's Info."""
    manifest = {
        "name": info.model,
        "split": info.split,
        "codec": info.codec,
        "input_shape": list(info.input_shape),
        "mean": list(info.mean),
        "std": list(info.std),
        "class_names": list(info.class_names),
        "data": json.loads(info.data_json or "{}"),
    }
    heads = {}
    for s in info.splits:
        if channels is None or s.channels == channels:
            heads[s.channels] = conn.fetch("head", s.channels, s.head_sha256)
            if channels is None:
                break  # the smallest C is enough by default
    full = conn.fetch("full", 0, info.full_sha256) if need_full else Path()
    return Served(
        manifest, full, heads, {s.channels: list(s.bottleneck_shape) for s in info.splits}, info.device
    )


def camera_images(manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The test set as the device's camera would give it: uint8 ``[N, H, W, C]`` and labels."""
    from fedsim.edge.experiment import raw_uint8, spec_data

    from fedsim.config import ImageDataSpec

    spec = dict(manifest.get("data") or {})
    if not spec:
        raise UserError("the model's manifest names no dataset; export it again with this fedsim")
    seed = int(spec.pop("seed", 0))
    data = spec_data(ImageDataSpec.model_validate(spec), seed)
    return raw_uint8(data.x_test, data.mean, data.std), data.y_test.numpy()


# ----------------------------------------------------------------------------- worker


@dataclass
class Clock:
    """Stage windows of one request on the monotonic clock, with meter marks at each boundary."""

    meter: Any
    marks: list[tuple[str, float, float]] = field(default_factory=list)

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        self.meter.mark()
        t0 = time.monotonic()
        out = fn()
        t1 = time.monotonic()
        self.meter.mark()
        self.marks.append((name, t0, t1))
        return out


class Worker:
    """Runs one configuration's requests; see the module docstring."""

    def __init__(self, config: WorkerConfig, progress: Callable[[int, int], None] | None = None) -> None:
        from fedsim.edge.calibrate import calibrate, time_scale
        from fedsim.edge.power import make_meter
        from fedsim.edge.shaper import Shaper, network_profile

        from fedsim.system.profiles import DEVICES

        if config.mode not in MODES:
            raise UserError(f"unknown mode {config.mode!r}; expected one of {', '.join(MODES)}")
        if config.device not in DEVICES:
            raise UserError(f"unknown device {config.device!r}; expected one of {', '.join(DEVICES.names())}")
        if config.server is None and not (config.mode == "local" and config.model_dir is not None):
            raise UserError(
                f"mode {config.mode} needs --server HOST:PORT (local mode may use --model DIR instead)"
            )
        self.config = config
        self.progress = progress
        self.profile = DEVICES.get(config.device)
        emulated = config.emulate and self.profile.gflops is not None
        self.calibration = calibrate(threads=config.threads) if emulated else None
        self.scale = 1.0 if self.calibration is None else time_scale(self.profile, self.calibration)
        self.shaper = Shaper(network_profile(config.network) if config.mode != "local" else None, config.seed)
        self.conn = Connection(config) if config.server is not None else None
        info = self.conn.info() if self.conn is not None else None
        if config.model_dir is not None:
            self.served = from_folder(config.model_dir)
        else:
            assert self.conn is not None and info is not None
            self.served = from_server(self.conn, info, config.mode == "local", config.channels)
        if info is not None:
            self.served.server_device = info.device
        self.server_info = info
        m = self.served.manifest
        self.mean, self.std = tuple(m["mean"]), tuple(m["std"])
        self.channels = self._pick_channels()
        self.images, self.labels = camera_images(m)
        self.session = self._session()
        self.meter = make_meter(
            config.meter,
            self.profile,
            period_s=config.meter_period_s,
            threads=config.threads,
            csv_path=config.meter_csv,
        )

    def _pick_channels(self) -> int | None:
        if self.config.mode != "split":
            return None
        known = sorted(self.served.bottlenecks)
        c = self.config.channels if self.config.channels is not None else known[0]
        if c not in known:
            raise UserError(f"bottleneck C={c} is not served; expected one of {', '.join(map(str, known))}")
        return c

    def _session(self) -> Any:
        if self.config.mode == "offload":
            return None
        from fedsim.edge.onnx_export import ort_session

        path = self.served.full_path if self.config.mode == "local" else self.served.head_paths[self.channels]
        return ort_session(path, self.config.threads)

    # -- one request
    def _call(self, request: bytes) -> tuple[bytes | None, int, str, float]:
        """Send ``request`` (shaped, retried); returns (reply, attempts, error, seconds in the call)."""
        assert self.conn is not None
        cfg = self.config
        attempts, error = 0, ""
        t0 = time.monotonic()
        while True:
            attempts += 1
            try:
                self.meter.radio(True)
                self.shaper.uplink(len(request))
                self.meter.radio(False)
                if cfg.stream:
                    reply = self.conn.stream().exchange(request)
                else:
                    reply = self.conn.infer(request, timeout=cfg.timeout_s, metadata=self.conn.metadata)
                self.meter.radio(True)
                self.shaper.downlink(len(reply))
                self.meter.radio(False)
                return reply, attempts, "", time.monotonic() - t0
            except (grpc.RpcError, StopIteration) as err:
                self.meter.radio(False)
                code = err.code() if isinstance(err, grpc.RpcError) else grpc.StatusCode.UNAVAILABLE
                details = err.details() if isinstance(err, grpc.RpcError) else "stream ended"
                error = f"{code.name}: {details}"
                if cfg.stream:
                    self.conn.drop_stream()
                if code not in RETRYABLE or attempts > cfg.retries:
                    return None, attempts, error, time.monotonic() - t0
                time.sleep(min(cfg.max_backoff_s, cfg.backoff_s * 2 ** (attempts - 1)))

    def run_one(self, request_id: int) -> dict[str, Any]:
        """One measured request; a row of ``requests.jsonl``."""
        cfg = self.config
        index = request_id % len(self.images)
        raw, label = self.images[index], int(self.labels[index])
        clock = Clock(self.meter)
        self.last_marks = clock.marks
        t_start = time.monotonic()
        row: dict[str, Any] = {"request_id": request_id, "image": index, "label": label}
        payload = wire = reply_bytes = 0
        server = pb.ServerTimings()
        attempts, error, call_s = 0, "", 0.0
        if cfg.mode == "local":
            x = clock.stage("preprocess", lambda: preprocess(raw, self.mean, self.std))
            logits = clock.stage(
                "head", lambda: self.session.run(None, {self.session.get_inputs()[0].name: x})[0]
            )
            prediction, ok = int(np.argmax(logits[0])), True
        else:
            if cfg.mode == "split":
                import torch
                from fedsim.edge.codec import CODECS

                x = clock.stage("preprocess", lambda: preprocess(raw, self.mean, self.std))
                z = clock.stage(
                    "head", lambda: self.session.run(None, {self.session.get_inputs()[0].name: x})[0]
                )
                codec = CODECS.get(self.served.manifest["codec"])
                encoded = clock.stage("encode", lambda: codec.encode(torch.from_numpy(z[0])))
                payload = encoded.payload_nbytes
                message = clock.stage(
                    "serialise",
                    lambda: pb.InferRequest(
                        request_id=request_id, features=tensor_message(encoded)
                    ).SerializeToString(),
                )
            else:
                jpeg = clock.stage("encode", lambda: jpeg_encode(raw, cfg.jpeg_quality))
                payload = len(jpeg)
                message = clock.stage(
                    "serialise",
                    lambda: pb.InferRequest(
                        request_id=request_id, image=pb.Image(data=jpeg, format="jpeg")
                    ).SerializeToString(),
                )
            wire = len(message)
            reply_raw, attempts, error, call_s = clock.stage("network", lambda: self._call(message))
            ok = reply_raw is not None
            prediction = -1
            if ok:
                reply_bytes = len(reply_raw)
                reply = clock.stage("decode", lambda: pb.InferReply.FromString(reply_raw))
                if reply.error_code:
                    ok, error = (
                        False,
                        f"{STATUS_NAMES.get(reply.error_code, reply.error_code)}: {reply.error_message}",
                    )
                else:
                    prediction, server = int(reply.prediction), reply.timings
        host_total = time.monotonic() - t_start
        self._fill(row, clock, server, call_s, host_total)
        row.update(
            ok=ok,
            attempts=attempts,
            error=error,
            prediction=prediction,
            correct=ok and prediction == label,
            payload_bytes=payload,
            wire_bytes=wire,
            reply_bytes=reply_bytes,
        )
        return row

    def _fill(
        self, row: dict[str, Any], clock: Clock, server: pb.ServerTimings, call_s: float, host_total: float
    ) -> None:
        """Stage times (emulated) and energies from the clock's windows and the server's timings."""
        ms = dict.fromkeys(STAGES, 0.0)
        energy = dict.fromkeys(ENERGY_STAGES, 0.0)
        server_emulated = server.total_ms - server.compute_ms + server.compute_emulated_ms
        for name, t0, t1 in clock.marks:
            real_ms = (t1 - t0) * 1e3
            if name == "network":
                duration = max(real_ms - server.total_ms, 0.0) + server_emulated
                ms["network"] = max(real_ms - server.total_ms, 0.0)
            else:
                duration = ms[name] = real_ms * self.scale
            energy[name] = self.meter.mean_power(t0, t1) * duration / 1e3
        ms["server_queue"] = server.queue_ms
        ms["server_decode"] = server.decode_ms
        ms["tail"] = server.compute_emulated_ms
        ms["total"] = sum(ms[s] for s in ENERGY_STAGES if s != "network") + (
            ms["network"] + server_emulated if any(n == "network" for n, *_ in clock.marks) else 0.0
        )
        row.update({f"{k}_ms": v for k, v in ms.items()})
        row["server_total_ms"] = server.total_ms
        row["host_total_ms"] = host_total * 1e3
        row["energy_J"] = {**energy, "total": sum(energy.values())}

    # -- the run
    def warm_up(self) -> None:
        """Unmeasured requests on the same channel and sessions (ids beyond the measured ones)."""
        for i in range(self.config.warmup):
            self.run_one(self.config.requests + i)

    def run(self, out: Path) -> dict[str, Any]:
        """Warm up, run the measured requests, write ``requests.jsonl`` and ``summary.json`` in ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        if (out / SUMMARY_FILE).exists() or (out / REQUESTS_FILE).exists():
            raise UserError(f"{out} already holds results; choose another --out (nothing was overwritten)")
        rows: list[dict[str, Any]] = []
        t0 = time.monotonic()
        with self.meter:
            self.warm_up()
            traced: list[tuple[int, list[tuple[str, float, float]]]] = []
            with (out / REQUESTS_FILE).open("w") as f:
                for i in range(self.config.requests):
                    row = self.run_one(i)
                    rows.append(row)
                    if i < TRACED_REQUESTS:
                        traced.append((i, self.last_marks))
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    if self.progress is not None:
                        self.progress(i + 1, self.config.requests)
        wall = time.monotonic() - t0
        write_json(out / TRACE_FILE, self.power_trace(traced))
        summary = self.summarise(rows, wall)
        write_json(out / SUMMARY_FILE, summary)
        return summary

    def power_trace(self, traced: list[tuple[int, list[tuple[str, float, float]]]]) -> dict[str, Any]:
        """The meter's samples over the first requests and their stage windows (seconds from the first)."""
        t, w = self.meter.trace()
        if not traced or not traced[0][1]:
            return {"t_s": [], "watts": [], "stages": [], "meter": self.meter.describe()}
        start = traced[0][1][0][1]
        end = traced[-1][1][-1][2]
        keep = (t >= start) & (t <= end)
        return {
            "t_s": [float(x - start) for x in t[keep]],
            "watts": [float(x) for x in w[keep]],
            "stages": [
                {"request_id": rid, "stage": name, "t0_s": a - start, "t1_s": b - start}
                for rid, marks in traced
                for name, a, b in marks
            ],
            "note": "real time on this host (stage durations are not scaled to the emulated device here)",
            "meter": self.meter.describe(),
        }

    def summarise(self, rows: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
        """Percentiles per stage over successful requests, energy, accuracy, bytes, failures."""
        good = [r for r in rows if r["ok"]]
        cfg = self.config
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "token"}
        return {
            "label": cfg.label(self.channels),
            "mode": cfg.mode,
            "device": cfg.device,
            "network": cfg.network_name,
            "channels": self.channels,
            "model": self.served.manifest.get("name"),
            "requests": len(rows),
            "ok": len(good),
            "failed": len(rows) - len(good),
            "errors": sorted({r["error"] for r in rows if r["error"]}),
            "accuracy": (sum(r["correct"] for r in good) / len(good)) if good else float("nan"),
            "latency_ms": {s: percentiles([r[f"{s}_ms"] for r in good]) for s in STAGES},
            "energy_J": {
                s: percentiles([r["energy_J"][s] for r in good])["mean"] for s in (*ENERGY_STAGES, "total")
            },
            "payload_bytes": percentiles([r["payload_bytes"] for r in good])["mean"],
            "wire_bytes": percentiles([r["wire_bytes"] for r in good])["mean"],
            "reply_bytes": percentiles([r["reply_bytes"] for r in good])["mean"],
            "raw_bytes": int(self.images[0].nbytes),
            "wall_s": wall_s,
            "time_scale": self.scale,
            "server_device": self.served.server_device,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "meter": self.meter.describe(),
            "shaper": self.shaper.describe(),
            "config": config,
        }

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
