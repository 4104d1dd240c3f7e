"""Network emulation for the edge testbed: an application-level shaper, and tc tbf as an option.

The link model (rate, delay, retransmissions) is :mod:`fedsim.system.timing`'s, the same as the
virtual clock's. The default, :class:`Shaper`, works anywhere: before a message of ``S`` bytes is handed
over (or after it is received), the calling thread blocks for the time the message would
take on the link of a :class:`~fedsim.system.profiles.NetworkProfile`::

    t = S * 8 / r + d,    d = rtt / 2 (+ jitter)

Each direction (uplink client -> server, downlink server -> client) is one link, a
link-busy clock shared by every thread using the shaper: a transfer starts at
``max(now, link_free_at)``, occupies the link for its serialisation time ``S * 8 / r``,
then pays the one-way propagation delay ``rtt / 2`` plus a jitter drawn uniformly in
``+- jitter_ms``. Loss: each MTU-sized packet is lost with probability ``loss`` and sent
again (retransmissions can be lost too), so a transfer serialises ``1 / (1 - loss)`` times
its bytes on average. Jitter and loss come from one :class:`numpy.random.Generator` per
direction, seeded by ``seed``: for a given seed and call order the delays are the same.

With a :class:`~fedsim.edge.traces.Trace` (``trace=``), the rate and RTT of a transfer are
those of the trace row in force when the transfer starts on its link (after queueing), in
seconds since the shaper was made, the trace replaying in a loop; jitter and loss still
come from ``profile``, which may then be ``None`` (no jitter, no loss).

Optional and more realistic on a real Linux host, :func:`tc_tbf_commands` and
:func:`run_in_netns` shape the loopback interface of a private network namespace with a
token-bucket filter (``tc tbf``; ``netem`` is missing on these machines, so propagation
delay still has to come from the application).
"""

from __future__ import annotations

import math
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from pydantic import ValidationError

from fedsim.components import NO_SHAPING
from fedsim.config import LinkSpec, format_validation_error
from fedsim.edge.traces import Trace
from fedsim.errors import UserError
from fedsim.system.profiles import NETWORKS, NetworkProfile
from fedsim.system.timing import (
    check_direction,
    direction_mbps,
    drawn_wire_bytes,
    link_delay_s,
    serialisation_s,
)

#: Last stretch of a wait spent spinning on ``time.perf_counter`` (``time.sleep`` oversleeps).
SPIN_S = 0.001
METHOD = (
    "application-level token bucket: per-direction link-busy clock (S*8/rate), one-way delay rtt/2 "
    "+ uniform jitter, seeded per-packet loss with retransmission"
)


# --------------------------------------------------------------------------- profiles


def network_profile(
    spec: str | Mapping[str, Any] | LinkSpec | NetworkProfile | None,
) -> NetworkProfile | None:
    """The link a spec names; ``None`` for no shaping.

    Parameters
    ----------
    spec : str, Mapping, LinkSpec, NetworkProfile or None
        A registered profile name (``fedsim.system.profiles.NETWORKS``: wifi, lte, 3g);
        ``None``, ``"none"`` or ``"loopback"`` for no shaping; or a link of one's own
        (:class:`fedsim.config.LinkSpec`, or a mapping of its keys: ``uplink_mbps``,
        ``downlink_mbps``, ``rtt_ms``, optionally ``jitter_ms``, ``loss``, ``name``).

    Returns
    -------
    NetworkProfile or None

    Raises
    ------
    UserError
        For an unknown name, or a link that :class:`~fedsim.config.LinkSpec` refuses (one line).
    """
    if spec is None or isinstance(spec, NetworkProfile):
        return spec
    if isinstance(spec, str):
        if spec.lower() in NO_SHAPING:
            return None
        if spec not in NETWORKS:
            known = ", ".join([*NETWORKS.names(), *NO_SHAPING])
            fields = ", ".join(k for k, f in LinkSpec.model_fields.items() if f.is_required())
            raise UserError(f"unknown network {spec!r}; expected one of: {known}, or a mapping with {fields}")
        return NETWORKS.get(spec)
    if isinstance(spec, Mapping):
        try:
            spec = LinkSpec.model_validate(dict(spec))
        except ValidationError as exc:
            raise UserError(format_validation_error(exc, "network", LinkSpec).split("\n")[0]) from None
    if isinstance(spec, LinkSpec):
        return NetworkProfile(**spec.model_dump(), source="user-defined")
    raise UserError(f"network: expected a profile name or a mapping, got {type(spec).__name__}")


# ------------------------------------------------------------------------- the shaper


def sleep_until(deadline: float) -> None:
    """Block until ``time.perf_counter() >= deadline``: sleep for the bulk, spin the last ~1 ms."""
    while True:
        left = deadline - time.perf_counter()
        if left <= SPIN_S:
            break
        time.sleep(left - SPIN_S)
    while time.perf_counter() < deadline:
        pass


class _Link:
    """One direction of a link: a busy-until clock, a rate, a delay and a seeded generator.

    ``schedule``, when given, maps a transfer's start (``time.perf_counter``) to the
    (rate, RTT) in force then, instead of the fixed ``mbps`` and ``rtt_ms``.
    """

    def __init__(
        self,
        mbps: float,
        rtt_ms: float,
        jitter_ms: float,
        loss: float,
        mtu: int,
        rng: np.random.Generator,
        schedule: Callable[[float], tuple[float, float]] | None = None,
    ) -> None:
        self.mbps, self.rtt_ms, self.jitter_ms = mbps, rtt_ms, jitter_ms
        self.loss = loss
        self.mtu = mtu
        self.rng = rng
        self.schedule = schedule
        self.free_at = -math.inf
        self.lock = threading.Lock()

    def wire_bytes(self, nbytes: int) -> int:
        """Bytes serialised for ``nbytes`` of payload, counting retransmissions of lost packets."""
        return drawn_wire_bytes(nbytes, self.loss, self.mtu, self.rng)

    def reserve(self, nbytes: int, now: float) -> tuple[float, float]:
        """Occupy the link for ``nbytes`` from ``now``; (arrival time, seconds from ``now`` to it)."""
        with self.lock:
            wait = max(0.0, self.free_at - now)
            mbps, rtt_ms = (self.mbps, self.rtt_ms) if self.schedule is None else self.schedule(now + wait)
            serialise = serialisation_s(self.wire_bytes(nbytes), mbps)
            delay = link_delay_s(rtt_ms, self.jitter_ms, self.rng.random() if self.jitter_ms > 0 else 0.5)
            self.free_at = now + wait + serialise
        planned = wait + serialise + delay
        return now + planned, planned


class Shaper:
    """Delay the calling thread as a transfer over a :class:`NetworkProfile` link would take.

    Parameters
    ----------
    profile : NetworkProfile or None
        The link (see :func:`network_profile`); ``None``: no shaping (nothing sleeps), unless
        there is a ``trace``.
    seed : int
        Seeds the jitter and loss draws (one generator per direction).
    mtu : int
        Packet size in bytes for loss and retransmission.
    trace : Trace, optional
        Rates and RTT over time (:mod:`fedsim.edge.traces`), replayed in a loop from
        ``clock_start``; they replace the profile's, whose jitter and loss still apply
        (none without a profile).
    clock_start : float, optional
        ``time.perf_counter()`` value at which the trace starts; by default, now.
    """

    def __init__(
        self,
        profile: NetworkProfile | None,
        seed: int = 0,
        mtu: int = 1500,
        *,
        trace: Trace | None = None,
        clock_start: float | None = None,
    ) -> None:
        if isinstance(mtu, bool) or not isinstance(mtu, int) or mtu <= 0:
            raise UserError(f"mtu: expected a positive integer, got {mtu!r}")
        self.profile = profile
        self.seed = seed
        self.mtu = mtu
        self.trace = trace
        self.clock_start = time.perf_counter() if clock_start is None else clock_start
        self._links: dict[str, _Link] = {}
        if profile is not None or trace is not None:
            up, down = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
            p = profile if profile is not None else NetworkProfile("trace", 1.0, 1.0, 0.0, 0.0, 0.0, "")
            schedules = self._schedules()
            self._links = {
                "uplink": _Link(p.uplink_mbps, p.rtt_ms, p.jitter_ms, p.loss, mtu, up, schedules[0]),
                "downlink": _Link(p.downlink_mbps, p.rtt_ms, p.jitter_ms, p.loss, mtu, down, schedules[1]),
            }

    def _schedules(self) -> tuple[Callable[[float], tuple[float, float]] | None, ...]:
        """(uplink, downlink) maps of a start time to (rate, RTT) from the trace; ``None`` without one."""
        trace = self.trace
        if trace is None:
            return None, None

        def up(start: float) -> tuple[float, float]:
            s = trace.at(max(0.0, start - self.clock_start))
            return s.up_mbps, s.rtt_ms

        def down(start: float) -> tuple[float, float]:
            s = trace.at(max(0.0, start - self.clock_start))
            return s.down_mbps, s.rtt_ms

        return up, down

    def trace_time(self, now: float | None = None) -> float:
        """Seconds since the trace started (``clock_start``) at ``now`` (default: the current time)."""
        return max(0.0, (time.perf_counter() if now is None else now) - self.clock_start)

    def uplink(self, nbytes: int) -> float:
        """Block for the transfer of ``nbytes`` client -> server; the seconds planned."""
        return self.transfer(nbytes, "uplink")

    def downlink(self, nbytes: int) -> float:
        """Block for the transfer of ``nbytes`` server -> client; the seconds planned."""
        return self.transfer(nbytes, "downlink")

    def transfer(self, nbytes: int, direction: str) -> float:
        """Block for the transfer of ``nbytes`` in ``direction``; the seconds planned (0 unshaped).

        The plan counts queueing behind earlier transfers on the same link, serialisation
        (with retransmissions), propagation delay and jitter.
        """
        check_direction(direction)
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        if not self._links:
            return 0.0
        arrival, planned = self._links[direction].reserve(int(nbytes), time.perf_counter())
        sleep_until(arrival)
        return planned

    def expected(self, nbytes: int, direction: str, t: float | None = None) -> float:
        """The reference time ``S * 8 / r + rtt / 2`` in seconds (no queueing, jitter or loss).

        With a trace, ``r`` and ``rtt`` are those of the row in force ``t`` seconds into the
        trace (default: now, :meth:`trace_time`).
        """
        check_direction(direction)
        if self.trace is not None:
            link: NetworkProfile | None = self.trace.profile_at(self.trace_time() if t is None else t)
        else:
            link = self.profile
        if link is None:
            return 0.0
        return serialisation_s(nbytes, direction_mbps(link, direction)) + link_delay_s(link.rtt_ms, 0.0)

    def describe(self) -> dict[str, Any]:
        """The link for a result file: profile fields (or the trace's), seed, MTU and the method."""
        if self.trace is not None:
            trace, p = self.trace, self.profile
            return {
                "name": f"trace:{trace.name}",
                **trace.describe(),
                "profile": None if p is None else p.name,
                "jitter_ms": 0.0 if p is None else p.jitter_ms,
                "loss": 0.0 if p is None else p.loss,
                "seed": self.seed,
                "mtu": self.mtu,
                "method": f"{METHOD}; rate and RTT replayed in a loop from trace {trace.name} "
                f"({trace.duration:g} s, the row in force when a transfer starts)",
            }
        if self.profile is None:
            return {"name": "none", "method": "no shaping", "seed": self.seed}
        return {**asdict(self.profile), "seed": self.seed, "mtu": self.mtu, "method": METHOD}


# ------------------------------------------------------------------- optional: tc tbf

#: Maximum queueing delay of the tbf qdisc before it drops (TCP adapts to the rate well before).
TBF_LATENCY_MS = 400
#: Bytes the loopback device adds to each packet (its Ethernet-sized hard header).
LO_HEADER = 14
#: Exit status of the namespace's shell when setting up lo or the qdisc failed.
_SETUP_FAILED = 97


def tc_tbf_commands(
    profile: NetworkProfile, dev: str = "lo", direction: str = "uplink", mtu: int = 1500
) -> list[list[str]]:
    """The ``tc`` command that limits ``dev`` to the profile's rate with a token-bucket filter.

    Only the rate of one direction is shaped (on ``lo`` both directions share it);
    propagation delay, jitter and loss need ``netem`` and are not applied.

    Parameters
    ----------
    profile : NetworkProfile
        The link.
    dev : str
        Network device.
    direction : {"uplink", "downlink"}
        Whose rate to apply.
    mtu : int
        The device's MTU; the bucket holds at least two packets with headers.

    Returns
    -------
    list of list of str
        Commands to run in order (argv lists).
    """
    mbps = direction_mbps(profile, direction)
    kbit = max(1, round(mbps * 1000))
    # burst >= one packet with its header (else every packet is dropped); about 1 ms at rate.
    burst = max(2 * (mtu + LO_HEADER), math.ceil(kbit * 1000 / 8 / 1000))
    tbf = ["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{kbit}kbit"]
    return [[*tbf, "burst", str(burst), "latency", f"{TBF_LATENCY_MS}ms"]]


def netns_unavailable() -> str | None:
    """Why :func:`run_in_netns` cannot work here, or ``None`` when it can."""
    for tool in ("unshare", "ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool!r} not found on PATH"
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up && tc qdisc show dev lo"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        reason = probe.stderr.strip() or f"exit status {probe.returncode}"
        return f"cannot make a network namespace with tc (unshare -n: {reason})"
    return None


def run_in_netns(
    argv: Sequence[str],
    profile: NetworkProfile,
    direction: str = "uplink",
    mtu: int = 1500,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a new network namespace whose loopback is shaped by ``tc tbf``.

    The namespace (``unshare -n``, needs root or user namespaces) has only ``lo``, set up
    with ``mtu`` and the commands of :func:`tc_tbf_commands`; it disappears when ``argv``
    exits. Servers and clients in ``argv`` talk over 127.0.0.1 at the profile's rate.

    Returns
    -------
    subprocess.CompletedProcess
        With ``stdout`` and ``stderr`` as text.

    Raises
    ------
    UserError
        When the namespace or the qdisc cannot be set up (the reason from the tools).
    """
    setup = [["ip", "link", "set", "lo", "mtu", str(mtu)], ["ip", "link", "set", "lo", "up"]]
    setup += tc_tbf_commands(profile, "lo", direction, mtu)
    script = (
        f"{' && '.join(shlex.join(cmd) for cmd in setup)} || exit {_SETUP_FAILED}; exec {shlex.join(argv)}"
    )
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode == _SETUP_FAILED or (done.returncode != 0 and "unshare:" in done.stderr):
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"cannot shape loopback in a network namespace with tc tbf: {reason}")
    return done
