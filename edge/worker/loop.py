"""The request loop: one request's stages on the monotonic clock, warm-up, the measured run.

Per request: ``preprocess``, ``head``, ``encode``, ``serialise``, ``network``, ``decode``
(device side, scaled by the profile's time scale when emulating) and the server's ``queue``,
``decode`` and ``tail`` from its reply; the energy of each device stage from the meter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from fedsim.edge.bench_files import REQUESTS_FILE, TRACE_FILE
from fedsim.edge.power import make_meter
from fedsim.edge.proto import pb
from fedsim.edge.quiet_gc import frozen_heap
from fedsim.edge.shaper import Shaper, network_profile
from fedsim.edge.traces import resolve_trace
from fedsim.edge.wire import jpeg_encode, preprocess, tensor_message
from fedsim.edge.worker.adaptive import AdaptivePolicy, options_for
from fedsim.edge.worker.config import MODES, WorkerConfig
from fedsim.edge.worker.connection import Connection, send
from fedsim.edge.worker.served import camera_images, from_folder, from_server
from fedsim.edge.worker.summary import ENERGY_STAGES, STAGES, power_trace, summarise
from fedsim.errors import UserError
from fedsim.files import write_json
from fedsim.runstore import SUMMARY_FILE

STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch (the codecs' few-kilobyte tensors) on one intra-op thread for the block: waking an
    idle thread pool cost about 2 ms a request, 40x the quantisation itself, on this host."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


#: Measured requests whose power samples and stage windows go to ``power_trace.json``.
TRACED_REQUESTS = 5


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
        from fedsim.system.profiles import DEVICES

        if config.mode not in MODES:
            raise UserError(f"unknown mode {config.mode!r}; expected one of {', '.join(MODES)}")
        if config.device not in DEVICES:
            raise UserError(f"unknown device {config.device!r}; expected one of {', '.join(DEVICES.names())}")
        if config.server is None and not (config.mode == "local" and config.model_dir is not None):
            raise UserError(
                f"mode {config.mode} needs --server HOST:PORT (local mode may use --model DIR instead)"
            )
        if config.interval_s is not None and not config.trace:
            raise UserError("an interval between requests needs a trace (--trace); expected both or neither")
        if config.mode == "adaptive" and config.server is None:
            raise UserError("mode adaptive needs --server HOST:PORT (it may offload or split any request)")
        self.config = config
        self.progress = progress
        self.profile = DEVICES.get(config.device)
        emulated = config.emulate and self.profile.gflops is not None
        self.calibration = calibrate(threads=config.threads) if emulated else None
        self.scale = 1.0 if self.calibration is None else time_scale(self.profile, self.calibration)
        remote = config.mode != "local"
        trace = resolve_trace(config.trace) if remote and config.trace else None
        self.shaper = Shaper(network_profile(config.network) if remote else None, config.seed, trace=trace)
        self.conn = Connection(config) if config.server is not None else None
        info = self.conn.info() if self.conn is not None else None
        adaptive = config.mode == "adaptive"
        if config.model_dir is not None:
            self.served = from_folder(config.model_dir)
        else:
            assert self.conn is not None and info is not None
            need_full = config.mode in ("local", "adaptive")
            self.served = from_server(self.conn, info, need_full, config.channels, every_head=adaptive)
        if info is not None:
            self.served.server_device = info.device
        self.server_info = info
        m = self.served.manifest
        self.mean, self.std = tuple(m["mean"]), tuple(m["std"])
        self.channels = self._pick_channels()
        self.images, self.labels = camera_images(m)
        self.sessions = self._sessions()
        self.policy = self._policy(trace) if adaptive else None
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

    def _sessions(self) -> dict[tuple[str, int | None], Any]:
        """The ONNX sessions the mode runs: the whole model (local) and heads (split), by (mode, C)."""
        from fedsim.edge.onnx_export import ort_session

        mode, threads = self.config.mode, self.config.threads
        out: dict[tuple[str, int | None], Any] = {}
        if mode in ("local", "adaptive"):
            out[("local", None)] = ort_session(self.served.full_path, threads)
        if mode == "split":
            assert self.channels is not None  # split mode always picks a C
            out[("split", self.channels)] = ort_session(self.served.head_paths[self.channels], threads)
        if mode == "adaptive":
            for c, path in sorted(self.served.head_paths.items()):
                out[("split", c)] = ort_session(path, threads)
        return out

    def _policy(self, trace: Any) -> AdaptivePolicy:
        """The adaptive policy over every served way of running (its link prior's rate ratio)."""
        cfg = self.config
        options = options_for(list(self.served.head_paths))
        policy = AdaptivePolicy(options, self.profile, cfg.objective, cfg.probe_s, cfg.probe_bytes)
        prior = trace.profile_at(0.0) if trace is not None else network_profile(cfg.network)
        if prior is not None:
            policy.link.down_per_up = prior.downlink_mbps / prior.uplink_mbps
        return policy

    # -- one request
    def run_one(self, request_id: int) -> dict[str, Any]:
        """One measured request (in the adaptive mode: the chosen way, then maybe a probe); a row
        of ``requests.jsonl``."""
        if self.policy is None:
            row = self._request(request_id, self.config.mode, self.channels)
            return {"mode": self.config.mode, **row}
        option, why = self.policy.choose(self.shaper.trace_time())
        row = self._request(request_id, option.mode, option.channels)
        self.policy.observe(option, row, self.shaper.trace_time())
        row = {"mode": option.name, "why": why, **row}
        if self.policy.probe_due(self.shaper.trace_time()):
            # after the request: its time is not in total_ms (answered before), its energy is
            joules, fields = self._probe()
            energy = row["energy_J"]
            row.update(fields, energy_J={**energy, "probe": joules, "total": energy["total"] + joules})
        return row

    def _probe(self) -> tuple[float, dict[str, Any]]:
        """Probe the link (two calls) and tell the policy; the probe's device energy (J) and its
        row fields (``probes``, ``probe_ms``, and ``probe_error`` if it failed)."""
        assert self.conn is not None and self.policy is not None
        fields: dict[str, Any] = {"probes": 1}
        self.meter.mark()
        t0 = time.monotonic()
        try:
            empty_ms, reply = self.conn.probe(0, self.shaper, self.meter)
            padded_ms, _ = self.conn.probe(self.policy.probe_bytes, self.shaper, self.meter)
        except UserError as err:
            fields["probe_error"] = str(err)
        else:
            self.policy.probed(self.shaper.trace_time(), empty_ms, padded_ms, reply)
        t1 = time.monotonic()
        self.meter.mark()
        fields["probe_ms"] = (t1 - t0) * 1e3
        return self.meter.mean_power(t0, t1) * (t1 - t0), fields

    def _request(self, request_id: int, mode: str, channels: int | None) -> dict[str, Any]:
        """One request in ``mode`` (``split``: with bottleneck ``channels``)."""
        cfg = self.config
        index = request_id % len(self.images)
        raw, label = self.images[index], int(self.labels[index])
        clock = Clock(self.meter)
        self.last_marks = clock.marks
        t_start = time.monotonic()
        row: dict[str, Any] = {"request_id": request_id, "image": index, "label": label}
        if self.shaper.trace is not None:
            row["trace_t_s"] = round(self.shaper.trace_time(), 3)
        payload = wire = reply_bytes = 0
        server = pb.ServerTimings()
        attempts, error, call_s = 0, "", 0.0
        if mode == "local":
            session = self.sessions[("local", None)]
            x = clock.stage("preprocess", lambda: preprocess(raw, self.mean, self.std))
            logits = clock.stage("head", lambda: session.run(None, {session.get_inputs()[0].name: x})[0])
            prediction, ok = int(np.argmax(logits[0])), True
        else:
            if mode == "split":
                import torch

                from fedsim.edge.codec import CODECS

                session = self.sessions[("split", channels)]
                x = clock.stage("preprocess", lambda: preprocess(raw, self.mean, self.std))
                z = clock.stage("head", lambda: session.run(None, {session.get_inputs()[0].name: x})[0])
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
            conn = self.conn
            assert conn is not None
            reply_raw, attempts, error, call_s = clock.stage(
                "network", lambda: send(conn, message, self.shaper, self.meter, cfg)
            )
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
        """Unmeasured requests on the same channel and sessions (ids beyond the measured ones),
        at the trace's start; the adaptive mode probes the link and runs each option as many
        times (at least once), to measure them."""
        first = self.config.requests
        if self.policy is None:
            for i in range(self.config.warmup):
                self._pace(0.0)
                self.run_one(first + i)
            return
        self._pace(0.0)
        self._probe()
        for option in self.policy.options:
            for _ in range(max(1, self.config.warmup)):
                self._pace(0.0)
                row = self._request(first, option.mode, option.channels)
                self.policy.observe(option, row, self.shaper.trace_time())
                first += 1

    def _pace(self, t: float) -> None:
        """With ``interval_s`` and a trace: the next request meets the link at trace time ``t``."""
        if self.config.interval_s is not None and self.shaper.trace is not None:
            self.shaper.clock_start = time.perf_counter() - t

    def run(self, out: Path) -> dict[str, Any]:
        """Warm up, run the measured requests, write ``requests.jsonl`` and ``summary.json`` in ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        if (out / SUMMARY_FILE).exists() or (out / REQUESTS_FILE).exists():
            raise UserError(f"{out} already holds results; choose another --out (nothing was overwritten)")
        rows: list[dict[str, Any]] = []
        t0 = time.monotonic()
        with self.meter, one_torch_thread():
            self.warm_up()
            traced: list[tuple[int, list[tuple[str, float, float]]]] = []
            with (out / REQUESTS_FILE).open("w") as f, frozen_heap():
                for i in range(self.config.requests):
                    self._pace(i * (self.config.interval_s or 0.0))
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
        """The meter's samples over the first requests and their stage windows (see :func:`power_trace`)."""
        return power_trace(self.meter, traced)

    def summarise(self, rows: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
        """The run's ``summary.json`` (see :func:`summarise`)."""
        return summarise(
            self.config,
            rows,
            wall_s,
            channels=self.channels,
            model=self.served.manifest.get("name"),
            raw_bytes=int(self.images[0].nbytes),
            time_scale=self.scale,
            server_device=self.served.server_device,
            calibration=None if self.calibration is None else self.calibration.to_dict(),
            meter=self.meter,
            shaper=self.shaper,
        )

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
