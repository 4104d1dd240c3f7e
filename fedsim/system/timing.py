"""Per-client round timing and energy: pure arithmetic on profiles.

A client's round, from the moment the server sends the model (time 0), is three
phases back to back::

    download [0, d)   compute [d, d + c)   upload [d + c, f)      f = d + c + u

with ``d = transfer_s(bytes_down, downlink)``, ``u = transfer_s(bytes_up, uplink)`` and
``c`` the virtual compute time. Energy over a window ``[0, end)`` integrates the
device's power: transmit power while downloading or uploading, compute power while
training, idle power after finishing until ``end`` (waiting for the round to close).

The link model is shared with the edge testbed's shaper (:mod:`fedsim.edge.shaper`): a
transfer serialises its wire bytes at the direction's rate (:func:`serialisation_s`), then
pays the one-way delay ``RTT/2`` plus jitter (:func:`link_delay_s`). Lost packets are sent
again: the virtual clock uses the expected wire bytes (:func:`expected_wire_bytes`), the
shaper draws the retransmissions packet by packet (:func:`drawn_wire_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.system.profiles import DeviceProfile, NetworkProfile

#: The two directions of a link: uplink (client -> server) and downlink (server -> client).
DIRECTIONS = ("uplink", "downlink")


def check_direction(direction: str) -> None:
    """Raise ValueError unless ``direction`` is one of :data:`DIRECTIONS`."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


def direction_mbps(link: NetworkProfile, direction: str) -> float:
    """The rate in Mbit/s of one direction of ``link``."""
    check_direction(direction)
    return link.uplink_mbps if direction == "uplink" else link.downlink_mbps


def expected_wire_bytes(nbytes: float, loss: float) -> float:
    """Bytes a link carries on average for ``nbytes`` of payload: lost packets are sent again."""
    return nbytes / (1.0 - loss)


def drawn_wire_bytes(nbytes: int, loss: float, mtu: int, rng: np.random.Generator) -> int:
    """Bytes serialised for ``nbytes`` of payload in packets of ``mtu`` bytes, each lost with
    probability ``loss`` and sent again until delivered (the tries drawn from ``rng``)."""
    if loss == 0.0 or nbytes == 0:
        return nbytes
    full, last = divmod(nbytes, mtu)
    sizes = np.full(full + (last > 0), mtu, dtype=np.int64)
    if last:
        sizes[-1] = last
    sends = rng.geometric(1.0 - loss, size=len(sizes))  # tries until delivered, >= 1
    return int((sizes * sends).sum())


def serialisation_s(wire_bytes: float, mbps: float) -> float:
    """Seconds a link of ``mbps`` Mbit/s is busy sending ``wire_bytes`` (retransmissions included)."""
    return wire_bytes * 8 / (mbps * 1e6)


def link_delay_s(rtt_ms: float, jitter_ms: float, u: float = 0.5) -> float:
    """One-way delay in seconds: ``RTT/2 + jitter * (2u - 1)``, never negative, for a
    uniform draw ``u`` in [0, 1) (0.5: no jitter)."""
    return max(0.0, rtt_ms / 2 + jitter_ms * (2 * u - 1)) / 1000


def transfer_s(nbytes: int, mbps: float, link: NetworkProfile, jitter_u: float = 0.5) -> float:
    """Expected seconds to move ``nbytes`` over a link of ``mbps`` Mbit/s.

    Lost packets are sent again, so the link carries ``bytes / (1 - loss)`` on average;
    the edge testbed's shaper (:mod:`fedsim.edge.shaper`) uses the same two terms with the
    retransmissions drawn packet by packet instead of their expectation.
    """
    return serialisation_s(expected_wire_bytes(nbytes, link.loss), mbps) + link_delay_s(
        link.rtt_ms, link.jitter_ms, jitter_u
    )


def direction_transfer_s(nbytes: int, link: NetworkProfile, direction: str, jitter_u: float = 0.5) -> float:
    """:func:`transfer_s` over one direction of ``link`` (``uplink`` or ``downlink``)."""
    return transfer_s(nbytes, direction_mbps(link, direction), link, jitter_u)


@dataclass(frozen=True)
class ClientTiming:
    """A client's phases in one round, in seconds from the round's start."""

    download_s: float
    compute_s: float
    upload_s: float

    @property
    def finish_s(self) -> float:
        """When the server has the client's update."""
        return self.download_s + self.compute_s + self.upload_s


def _overlap(start: float, stop: float, end: float) -> float:
    """Length of [start, stop) inside [0, end)."""
    return max(0.0, min(stop, end) - start)


def energy_j(device: DeviceProfile, t: ClientTiming, end_s: float) -> float:
    """Joules the device spends in the window ``[0, end_s)`` of the round.

    ``end_s`` is when the client leaves the round: the round's end (finished clients
    idle until then, stragglers are stopped then) or its drop-out time.
    """
    d, c = t.download_s, t.compute_s
    f = t.finish_s
    return (
        device.transmit_w * (_overlap(0.0, d, end_s) + _overlap(d + c, f, end_s))
        + device.compute_w * _overlap(d, d + c, end_s)
        + device.idle_w * max(0.0, end_s - f)
    )
