"""Per-client round timing and energy: pure arithmetic on profiles.

A client's round, from the moment the server sends the model (time 0), is three
phases back to back::

    download [0, d)   compute [d, d + c)   upload [d + c, f)      f = d + c + u

with ``d = transfer_s(bytes_down, downlink)``, ``u = transfer_s(bytes_up, uplink)`` and
``c`` the virtual compute time. Energy over a window ``[0, end)`` integrates the
device's power: transmit power while downloading or uploading, compute power while
training, idle power after finishing until ``end`` (waiting for the round to close).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedsim.system.profiles import DeviceProfile, NetworkProfile


def transfer_s(nbytes: int, mbps: float, link: NetworkProfile, jitter_u: float = 0.5) -> float:
    """Seconds to move ``nbytes`` over a link of ``mbps`` Mbit/s.

    ``bytes * 8 / rate / (1 - loss)`` plus a one-way delay ``RTT/2 + jitter * (2u - 1)``
    (never negative), where ``u`` in [0, 1) is a seeded uniform draw (0.5: no jitter).
    """
    serialise = nbytes * 8 / (mbps * 1e6) / (1.0 - link.loss)
    delay = max(0.0, link.rtt_ms / 2 + link.jitter_ms * (2 * jitter_u - 1)) / 1000
    return serialise + delay


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
