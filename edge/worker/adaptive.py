"""The adaptive worker's policy: per request, the way of running it that the planner predicts best.

The options are what the served model offers: ``local`` (the whole model on the device),
``offload`` (a JPEG to the server) and ``split-CN`` (each served BottleFit head). Each one's
costs are *measured* as the worker runs it (warm-up runs every option): device time and
energy of its device stages, bytes each way, and the server's time, each the median of its
last :data:`WINDOW` runs. The link changes, so it is an exponentially weighted moving
average (EWMA) of RTT and uplink time per byte, whose older samples lose half their weight
every :data:`HALF_LIFE_S` seconds of trace time (a sample after a long gap, a probe say,
counts almost alone)
(:class:`LinkEstimate`), from two sources:

- every remote request gives its network time (the call's time less the server's). It is
  split between RTT and transfer in the proportion the current estimate predicts (a link
  that slows down is taken to slow both), and both estimates move by that factor;
- a *probe* gives each apart: two shaped ``Info`` calls, one empty (its time is the RTT) and
  one padded with ``probe_bytes`` (the difference is their transfer). A probe is due when no
  remote request has sampled the link for ``probe_s`` seconds (so only while the worker
  computes locally). The calls run after the request, so they delay none; for the ``energy``
  objective, when sending the request itself by the most frugal remote option is predicted
  to cost less energy than the calls (their radio time: two RTTs and the padding), the
  request is the probe.

The server's queue time (each reply reports it) is one EWMA added to every remote option.
The choice is :func:`fedsim.edge.plan.choose` over :func:`fedsim.edge.plan.predict` of each
option (a :class:`~fedsim.edge.plan.Candidate` with its measured costs and no FLOPs), for the
``latency`` or ``energy`` objective; each request's row says what was chosen and why.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fedsim.edge.bench_files import way_name
from fedsim.edge.plan import Candidate, FixedLink, Machines, Prediction, choose, objective_of, predict
from fedsim.edge.worker.summary import DEVICE_STAGES
from fedsim.system.profiles import DeviceProfile

#: Seconds (trace time) in which the weight of older samples in the link's averages halves.
HALF_LIFE_S = 1.0
#: An option's costs are the median of its last this many samples (one slow request, a
#: garbage collection say, must not keep an option out of use: only its use refreshes them).
WINDOW = 5
#: Shortest transfer (ms) a rate is computed from (below it, the sample is noise).
MIN_TRANSFER_MS = 0.05


@dataclass
class Ewma:
    """A moving average over time: the older samples' weight halves every :data:`HALF_LIFE_S`
    seconds (``None`` before the first sample)."""

    value: float | None = None
    at: float = float("-inf")

    def add(self, x: float, t: float) -> None:
        """Take sample ``x`` made at time ``t`` (seconds)."""
        if self.value is None:
            self.value = x
        else:
            weight = 1.0 - 0.5 ** (max(t - self.at, 0.0) / HALF_LIFE_S)
            self.value += weight * (x - self.value)
        self.at = max(self.at, t)


@dataclass
class Recent:
    """The median of the last :data:`WINDOW` samples (``None`` before the first)."""

    samples: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def add(self, x: float) -> None:
        self.samples.append(x)

    @property
    def value(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None


@dataclass
class Option:
    """One way of running a request, with its measured costs."""

    name: str
    mode: str
    channels: int | None = None
    device_ms: Recent = field(default_factory=Recent)
    device_mj: Recent = field(default_factory=Recent)
    server_ms: Recent = field(default_factory=Recent)
    up_bytes: Recent = field(default_factory=Recent)
    down_bytes: Recent = field(default_factory=Recent)

    @property
    def remote(self) -> bool:
        return self.mode != "local"

    @property
    def measured(self) -> bool:
        return self.device_ms.value is not None and (not self.remote or self.server_ms.value is not None)

    def observe(self, row: dict[str, Any]) -> None:
        """Update the costs from a successful request's row (emulated stage times, energies)."""
        self.device_ms.add(sum(row[f"{s}_ms"] for s in DEVICE_STAGES))
        self.device_mj.add(1e3 * sum(row["energy_J"][s] for s in DEVICE_STAGES))
        if self.remote:
            self.server_ms.add(row["server_decode_ms"] + row["tail_ms"])
            self.up_bytes.add(row["wire_bytes"])
            self.down_bytes.add(row["reply_bytes"])

    def candidate(self, queue_ms: float) -> Candidate:
        """The option as the planner's candidate: measured costs, no FLOPs."""

        def v(e: Recent) -> float:
            return e.value or 0.0

        server = v(self.server_ms) + queue_ms if self.remote else 0.0
        return Candidate(
            self.name,
            0.0,
            0.0,
            v(self.up_bytes),
            v(self.down_bytes),
            device_extra_ms=v(self.device_ms),
            server_extra_ms=server,
            device_mj=v(self.device_mj),
        )


def options_for(served_channels: list[int]) -> list[Option]:
    """``local``, ``offload`` and one ``split-CN`` per served bottleneck width."""
    return [
        Option("local", "local"),
        Option("offload", "offload"),
        *(Option(way_name("split", c), "split", c) for c in sorted(served_channels)),
    ]


@dataclass
class LinkEstimate:
    """The link as the worker believes it to be: RTT and uplink time per byte, from requests and
    probes (per byte, not a rate: averaging times keeps a noisy sample from biasing the split).

    ``down_per_up`` is the downlink/uplink rate ratio assumed (replies are small, so it
    matters little): the prior link's, or 1.
    """

    rtt_ms: Ewma = field(default_factory=Ewma)
    up_ms_per_byte: Ewma = field(default_factory=Ewma)
    down_per_up: float = 1.0
    sampled_at: float = float("-inf")

    @property
    def known(self) -> bool:
        return self.rtt_ms.value is not None and self.up_ms_per_byte.value is not None

    def link(self) -> FixedLink:
        per_byte = self.up_ms_per_byte.value or 8e-3  # 1 Mbit/s before any sample
        up = 8 / (per_byte * 1e3)
        return FixedLink(up, up * self.down_per_up, self.rtt_ms.value or 0.0)

    def transfer_ms(self, up_bytes: float, down_bytes: float) -> float:
        """Predicted serialisation time of a request and its reply (no RTT)."""
        per_byte = self.up_ms_per_byte.value or 8e-3
        return per_byte * (up_bytes + down_bytes / self.down_per_up)

    def from_request(self, t: float, up_bytes: float, down_bytes: float, network_ms: float) -> None:
        """A remote request's network time: RTT and transfer time move by the same factor."""
        self.sampled_at = t
        if not self.known:
            return  # nothing to split it by yet (the warm-up probes first)
        assert self.rtt_ms.value is not None and self.up_ms_per_byte.value is not None
        predicted = self.rtt_ms.value + self.transfer_ms(up_bytes, down_bytes)
        factor = max(network_ms, MIN_TRANSFER_MS) / max(predicted, MIN_TRANSFER_MS)
        self.rtt_ms.add(self.rtt_ms.value * factor, t)
        self.up_ms_per_byte.add(self.up_ms_per_byte.value * factor, t)

    def from_probe(
        self, t: float, empty_ms: float, padded_ms: float, pad_bytes: int, reply_bytes: int
    ) -> None:
        """A probe: the empty call's time is the RTT (and its reply); the padded one's extra time
        is the padding's transfer."""
        self.sampled_at = t
        reply_ms = self.transfer_ms(0, reply_bytes) if self.known else 0.0
        self.rtt_ms.add(max(empty_ms - reply_ms, 0.0), t)
        self.up_ms_per_byte.add(max(padded_ms - empty_ms, MIN_TRANSFER_MS) / pad_bytes, t)


@dataclass
class AdaptivePolicy:
    """Chooses an option per request and learns from each; see the module docstring."""

    options: list[Option]
    device: DeviceProfile
    objective: str = "latency"
    probe_s: float = 5.0
    probe_bytes: int = 8192
    link: LinkEstimate = field(default_factory=LinkEstimate)
    queue_ms: Ewma = field(default_factory=Ewma)
    probes: int = 0

    def __post_init__(self) -> None:
        self._by_name = {o.name: o for o in self.options}

    def predictions(self) -> list[Prediction]:
        """The planner's prediction of each measured option on the estimated link."""
        machines = Machines(self.device, self.device, 1.0, 1.0)  # no FLOPs: the costs are measured
        queue = self.queue_ms.value or 0.0
        usable = [o for o in self.options if o.measured and (self.link.known or not o.remote)]
        return [predict(o.candidate(queue), self.link.link(), machines) for o in usable]

    def choose(self, t: float) -> tuple[Option, dict[str, Any]]:
        """The option to run next (``t``: trace seconds now), and why: the objective, the link
        estimate and each prediction; ``probe: request`` when a due probe is this request."""
        preds = self.predictions()
        if not preds:  # nothing measured yet: the warm-up's order
            return self.options[0], {"reason": "not measured yet"}
        best = choose(preds, self.objective)
        link = self.link.link()
        why: dict[str, Any] = {
            "objective": self.objective,
            "up_mbps": round(link.up_mbps, 3),
            "rtt_ms": round(link.rtt_ms, 2),
            "queue_ms": round(self.queue_ms.value or 0.0, 2),
            "predicted": {p.candidate.name: [round(p.latency_ms, 2), round(p.energy_mj, 2)] for p in preds},
        }
        remote = self._probe_request(best, preds) if self.probe_due(t) else None
        if remote is not None:
            why["probe"] = "request"
            return self._by_name[remote.candidate.name], why
        return self._by_name[best.candidate.name], why

    def _probe_request(self, best: Prediction, preds: list[Prediction]) -> Prediction | None:
        """The remote option to send this request by, when that is predicted to cost the
        objective less than probe calls would (the energy objective only: probe calls, made
        between requests, cost no request latency)."""
        remote = [p for p in preds if p.candidate.remote]
        if self.objective != "energy" or best.candidate.remote or not remote:
            return None
        cheapest = min(remote, key=objective_of("energy"))
        if cheapest.energy_mj - best.energy_mj < self.probe_calls_mj():
            return cheapest
        return None

    def probe_calls_mj(self) -> float:
        """Predicted device energy of a probe's two calls: the radio for two RTTs and the padding."""
        link = self.link.link()
        radio_ms = 2 * link.rtt_ms + self.probe_bytes * 8 / (link.up_mbps * 1e3)
        return self.device.transmit_w * radio_ms

    def observe(self, option: Option, row: dict[str, Any], t: float) -> None:
        """Learn from a request's row (``t``: trace seconds when it ended)."""
        if not row["ok"]:
            return
        option.observe(row)
        if option.remote:
            self.queue_ms.add(row["server_queue_ms"], t)
            self.link.from_request(t, row["wire_bytes"], row["reply_bytes"], row["network_ms"])

    def probe_due(self, t: float) -> bool:
        """Whether the link has gone unsampled for ``probe_s`` seconds."""
        return t - self.link.sampled_at >= self.probe_s

    def probed(self, t: float, empty_ms: float, padded_ms: float, reply_bytes: int) -> None:
        """Record a probe's two calls."""
        self.probes += 1
        self.link.from_probe(t, empty_ms, padded_ms, self.probe_bytes, reply_bytes)
