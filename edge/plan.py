"""Split planning: predict every way of running one inference and choose (Neurosurgeon-style).

Y. Kang et al., "Neurosurgeon: Collaborative Intelligence Between the Cloud and Mobile Edge",
ASPLOS 2017, choose the partition point of a network per request from per-layer latency and
energy predictions and the current link. fedsim predicts, for a model, a device profile, a
server profile and a link, every candidate:

- ``local``: the whole model on the device;
- ``offload-qQ``: the image as a JPEG of quality Q, the whole model on the server;
- ``split-STAGE-CODEC``: the stages up to STAGE on the device, the tensor after it sent raw
  (fp32) or quantised (quant8), the rest on the server;
- ``bottlefit-CN``: a trained BottleFit head with N bottleneck channels (from a run folder).

The cost model (one definition, :func:`predict`): compute time is FLOPs at the rate of the
profile's ResNet-18 at 224x224 (its published batch-1 latency, or this host's calibrated
one for ``this-host``), as ``fedsim edge bench`` scales device times; a
transfer of S bytes takes ``S * 8 / rate / (1 - loss)``, and a remote candidate pays one
round-trip time; device energy is ``compute_w`` x device compute + ``transmit_w`` x radio
time + ``idle_w`` x the time it waits for the server. The radio is on for each transfer and
its one-way delay (the RTT in all), as the testbed's power model counts it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from fedsim.errors import UserError
from fedsim.system.profiles import DeviceProfile, NetworkProfile

#: FLOPs of ResNet-18 at 224x224 as :func:`fedsim.edge.evaluate.count_flops` counts them (2 x MACs):
#: a profile's ResNet-18 latency is spent on this many FLOPs.
RESNET18_FLOPS = 3_628_146_688
#: Bytes of a reply (class scores of 1,000 classes as float32 plus framing), the same for
#: every remote candidate.
REPLY_BYTES = 4 * 1000 + 64
OBJECTIVES = ("latency", "energy")


class Link(Protocol):
    """What a prediction reads of a link (a trace row or a network profile)."""

    @property
    def up_mbps(self) -> float: ...
    @property
    def down_mbps(self) -> float: ...
    @property
    def rtt_ms(self) -> float: ...


@dataclass(frozen=True)
class FixedLink:
    """A link that does not change: bandwidths, RTT and packet loss."""

    up_mbps: float
    down_mbps: float
    rtt_ms: float
    loss: float = 0.0

    @classmethod
    def of(cls, profile: NetworkProfile) -> FixedLink:
        """The link of a network profile."""
        return cls(profile.uplink_mbps, profile.downlink_mbps, profile.rtt_ms, profile.loss)


@dataclass(frozen=True)
class Candidate:
    """One way of running an inference: where the FLOPs run and what crosses the link.

    ``device_extra_ms`` is device time that is not model compute (preprocessing, encoding);
    ``server_extra_ms`` server time that is not model compute (decoding); ``accuracy`` is
    None where nothing was evaluated (an untrained model). ``jpeg_quality`` (offloading) and
    ``quant8_numel`` (a quantised split's tensor elements) say what the request encodes.
    ``device_mj``, when measured (the adaptive worker's), is the device's energy for its own
    stages, in place of ``compute_w`` x device time.
    """

    name: str
    device_flops: float
    server_flops: float
    up_bytes: float
    down_bytes: float
    accuracy: float | None = None
    device_extra_ms: float = 0.0
    server_extra_ms: float = 0.0
    jpeg_quality: int | None = None
    quant8_numel: int | None = None
    device_mj: float | None = None

    @property
    def remote(self) -> bool:
        """Whether the candidate uses the link."""
        return self.up_bytes > 0


@dataclass(frozen=True)
class Prediction:
    """A candidate's predicted latency (ms) and device energy (mJ), and its parts."""

    candidate: Candidate
    device_ms: float
    uplink_ms: float
    downlink_ms: float
    rtt_ms: float
    server_ms: float
    latency_ms: float
    energy_mj: float
    pareto: bool = False

    def row(self) -> dict[str, Any]:
        """The prediction as a flat JSON-ready dict."""
        out = {k: v for k, v in asdict(self).items() if k != "candidate"}
        return {**asdict(self.candidate), **out}


@dataclass(frozen=True)
class Machines:
    """The device and the server, with their ResNet-18 latencies (ms at 224x224, batch 1)."""

    device: DeviceProfile
    server: DeviceProfile
    device_ref_ms: float
    server_ref_ms: float


def predict(c: Candidate, link: Link, m: Machines) -> Prediction:
    """Latency and device energy of candidate ``c`` on ``link`` (its ``loss``, if it has one,
    makes each transfer ``1 / (1 - loss)`` times longer)."""
    dev = c.device_flops / RESNET18_FLOPS * m.device_ref_ms + c.device_extra_ms
    srv = c.server_flops / RESNET18_FLOPS * m.server_ref_ms + c.server_extra_ms if c.remote else 0.0
    retransmit = 1.0 / (1.0 - float(getattr(link, "loss", 0.0)))
    up = c.up_bytes * 8 / (link.up_mbps * 1e3) * retransmit if c.remote else 0.0
    down = c.down_bytes * 8 / (link.down_mbps * 1e3) * retransmit if c.remote else 0.0
    rtt = link.rtt_ms if c.remote else 0.0
    latency = dev + up + down + rtt + srv
    d = m.device
    compute_mj = d.compute_w * dev if c.device_mj is None else c.device_mj
    energy = compute_mj + d.transmit_w * (up + down + rtt) + d.idle_w * srv
    return Prediction(c, dev, up, down, rtt, srv, latency, energy)


def _dominates(a: Prediction, b: Prediction) -> bool:
    acc_a = a.candidate.accuracy if a.candidate.accuracy is not None else 0.0
    acc_b = b.candidate.accuracy if b.candidate.accuracy is not None else 0.0
    no_worse = a.latency_ms <= b.latency_ms and a.energy_mj <= b.energy_mj and acc_a >= acc_b
    better = a.latency_ms < b.latency_ms or a.energy_mj < b.energy_mj or acc_a > acc_b
    return no_worse and better


def mark_pareto(preds: Sequence[Prediction]) -> list[Prediction]:
    """The predictions with ``pareto`` set where no other is at least as good in latency,
    energy and accuracy and better in one."""
    return [replace(p, pareto=not any(_dominates(q, p) for q in preds if q is not p)) for p in preds]


def objective_of(name: str) -> Callable[[Prediction], float]:
    """What a choice minimises: ``latency`` or ``energy`` (ties broken by the other)."""
    if name == "latency":
        return lambda p: (p.latency_ms, p.energy_mj)  # type: ignore[return-value]  # tuples compare
    if name == "energy":
        return lambda p: (p.energy_mj, p.latency_ms)  # type: ignore[return-value]  # tuples compare
    raise UserError(f"unknown objective {name!r}; expected one of: {', '.join(OBJECTIVES)}")


def eligible(preds: Sequence[Prediction], min_accuracy: float) -> list[Prediction]:
    """The predictions whose accuracy reaches ``min_accuracy`` (all of them when it is 0)."""
    if min_accuracy <= 0:
        return list(preds)
    unknown = [p.candidate.name for p in preds if p.candidate.accuracy is None]
    if unknown:
        raise UserError(
            f"--min-accuracy needs evaluated candidates, but {unknown[0]} has no accuracy "
            "(an untrained model); expected a BottleFit run folder as MODEL, or no --min-accuracy"
        )
    kept = [p for p in preds if p.candidate.accuracy is not None and p.candidate.accuracy >= min_accuracy]
    if not kept:
        best = max(p.candidate.accuracy or 0.0 for p in preds)
        raise UserError(f"no candidate reaches accuracy {min_accuracy}; the best has {best:.3f}")
    return kept


def choose(preds: Sequence[Prediction], objective: str, min_accuracy: float = 0.0) -> Prediction:
    """The eligible prediction that minimises ``objective``."""
    return min(eligible(preds, min_accuracy), key=objective_of(objective))


# ----------------------------------------------------------------------------- candidates


def resnet_candidates(
    stage_flops: Sequence[tuple[str, float]],
    stage_numel: Sequence[int],
    jpeg: dict[int, tuple[float, float]],
    accuracy: float | None = None,
) -> list[Candidate]:
    """Local, offloading at each JPEG quality and a split after every stage but the last.

    Parameters
    ----------
    stage_flops : sequence of (name, FLOPs)
        The model's stages in order (``stem``, ``layer1`` .. ``layer4``, ``pool_fc``).
    stage_numel : sequence of int
        Elements of one sample's tensor after each stage.
    jpeg : dict
        JPEG quality -> (bytes of the image, device ms to encode it).
    accuracy : float, optional
        The model's accuracy (local, offloading and raw splits share it).
    """
    total = sum(f for _, f in stage_flops)
    out = [Candidate("local", total, 0.0, 0.0, 0.0, accuracy)]
    for q, (nbytes, encode_ms) in sorted(jpeg.items()):
        offload = Candidate(
            f"offload-q{q}", 0.0, total, nbytes, REPLY_BYTES, accuracy, encode_ms, jpeg_quality=q
        )
        out.append(offload)
    done = 0.0
    for (name, flops), numel in zip(stage_flops[:-1], stage_numel[:-1], strict=True):
        done += flops
        out.append(Candidate(f"split-{name}-fp32", done, total - done, 4 * numel, REPLY_BYTES, accuracy))
        quant8 = Candidate(f"split-{name}-quant8", done, total - done, numel + 5, REPLY_BYTES, accuracy)
        out.append(replace(quant8, quant8_numel=numel))
    return out


def bottlefit_candidates(rows: Sequence[dict[str, Any]]) -> list[Candidate]:
    """One candidate per evaluated C of a BottleFit run (``evaluate.json`` rows)."""
    return [
        Candidate(
            f"bottlefit-C{r['C']}",
            float(r["head_flops"]),
            float(r["tail_flops"]),
            float(r["payload_bytes"]),
            REPLY_BYTES,
            float(r["accuracy"]),
            quant8_numel=math.prod(r["bottleneck_shape"]),
        )
        for r in rows
    ]


# ----------------------------------------------------------------------------- over a trace


class TraceLike(Protocol):
    """A link that changes over time (:class:`fedsim.edge.traces.Trace`)."""

    @property
    def duration(self) -> float: ...
    def at(self, t: float) -> Link: ...


def plan_over_trace(
    candidates: Sequence[Candidate],
    trace: TraceLike,
    machines: Machines,
    objective: str,
    min_accuracy: float = 0.0,
    interval_s: float = 1.0,
) -> dict[str, Any]:
    """Each candidate's mean latency and energy over requests every ``interval_s`` along the
    trace (virtual time), and the same for ``adaptive``: per request, the candidate
    :func:`choose` picks for that moment's link."""
    if interval_s <= 0:
        raise UserError(f"interval must be positive, got {interval_s}")
    times = [i * interval_s for i in range(max(1, math.ceil(trace.duration / interval_s)))]
    sums = {c.name: [0.0, 0.0] for c in candidates}
    adaptive = [0.0, 0.0]
    picks: dict[str, int] = {}
    for t in times:
        preds = [predict(c, trace.at(t), machines) for c in candidates]
        for p in preds:
            sums[p.candidate.name][0] += p.latency_ms
            sums[p.candidate.name][1] += p.energy_mj
        best = choose(preds, objective, min_accuracy)
        adaptive[0] += best.latency_ms
        adaptive[1] += best.energy_mj
        picks[best.candidate.name] = picks.get(best.candidate.name, 0) + 1
    n = len(times)
    fixed = {name: {"latency_ms": s[0] / n, "energy_mj": s[1] / n} for name, s in sums.items()}
    first = [predict(c, trace.at(0.0), machines) for c in candidates]
    allowed = {p.candidate.name for p in eligible(first, min_accuracy)}
    key = "latency_ms" if objective == "latency" else "energy_mj"
    best_fixed = min((name for name in fixed if name in allowed), key=lambda k: fixed[k][key])
    ours = {"latency_ms": adaptive[0] / n, "energy_mj": adaptive[1] / n}
    return {
        "requests": n,
        "interval_s": interval_s,
        "fixed": fixed,
        "adaptive": ours,
        "adaptive_picks": dict(sorted(picks.items(), key=lambda kv: -kv[1])),
        "best_fixed": best_fixed,
        "adaptive_vs_best_fixed": ours[key] / fixed[best_fixed][key],
    }
