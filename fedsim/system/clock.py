"""The virtual clock: who can be sampled, when a round closes, what it cost.

The round loop asks :meth:`SystemModel.start_round` for the clients available at the
current virtual time (waiting, in virtual time, until at least one is) and how many to
sample, runs the round as usual, then hands the train rows to :meth:`SystemModel.settle`,
which gives every client its timing (:mod:`fedsim.system.timing`), applies the round
policy, marks each row ``ok``, ``dropped`` or ``late``, returns the partitions whose
updates may be aggregated, and advances the clock by the round's duration.

Round policies (round starts at 0; client ``i`` finishes at ``f_i`` and goes off at
``o_i``; it *completes* if ``o_i >= f_i``):

``wait_all``
    the round ends when every client has finished or gone off: ``E = max_i min(f_i, o_i)``.
``deadline``
    ``E = min(deadline_s, max_i min(f_i, o_i))``; completers with ``f_i <= E`` are kept.
``overcommit``
    ``ceil(overcommit * K)`` clients are sampled; the first ``K`` completers (by finish
    time, then partition id) are kept and the round ends at the K-th finish (or as
    ``wait_all`` if fewer than K complete).

A client not kept is ``dropped`` if it went off before finishing and before the round
ended, else ``late`` (still running, or finished but surplus, when the round closed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from fedsim.config import RoundPolicySpec, Scenario, SystemSpec
from fedsim.errors import UserError
from fedsim.system.availability import AVAILABILITY
from fedsim.system.compute import COMPUTE_MODELS
from fedsim.system.profiles import DEVICES, NETWORKS, DeviceProfile, NetworkProfile
from fedsim.system.split_plan import split_choice
from fedsim.system.timing import ClientTiming, direction_transfer_s, energy_j

#: Seed-sequence tags (keep the system model's draws apart from sampling and training).
ASSIGN_TAG = 0x5157
JITTER_TAG = 0x7177


def assign_profiles(
    spec: SystemSpec, num_clients: int, seed: int
) -> list[tuple[DeviceProfile, NetworkProfile]]:
    """Each partition's (device, network), by share, over a seeded permutation of partitions.

    Counts are ``share * num_clients`` rounded by largest remainder (ties to the first
    mix entry), so they always sum to ``num_clients``.
    """
    exact = [m.share * num_clients for m in spec.mix]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: num_clients - sum(counts)]:
        counts[i] += 1
    order = np.random.default_rng([seed, ASSIGN_TAG]).permutation(num_clients)
    out: list[tuple[DeviceProfile, NetworkProfile]] = [None] * num_clients  # type: ignore[list-item]  # every slot filled below
    start = 0
    for entry, count in zip(spec.mix, counts, strict=True):
        pair = (DEVICES.get(entry.device), NETWORKS.get(entry.network))
        for pid in order[start : start + count]:
            out[int(pid)] = pair
        start += count
    return out


# ------------------------------------------------------------------------ round policies

Policy = Callable[[RoundPolicySpec, int, dict[int, float], dict[int, float]], tuple[float, set[int]]]


def _completers(finish: dict[int, float], off: dict[int, float]) -> list[int]:
    """Clients that finish before going off, by finish time then partition id."""
    return sorted((p for p in finish if off[p] >= finish[p]), key=lambda p: (finish[p], p))


def _all_resolved(finish: dict[int, float], off: dict[int, float]) -> float:
    return max((min(finish[p], off[p]) for p in finish), default=0.0)


def wait_all(
    spec: RoundPolicySpec, k: int, finish: dict[int, float], off: dict[int, float]
) -> tuple[float, set[int]]:
    """Wait until every client has finished or gone off; keep every completer."""
    return _all_resolved(finish, off), set(_completers(finish, off))


def deadline(
    spec: RoundPolicySpec, k: int, finish: dict[int, float], off: dict[int, float]
) -> tuple[float, set[int]]:
    """Close at ``deadline_s`` (or earlier when everyone is done); keep completers in time."""
    end = min(float(spec.deadline_s), _all_resolved(finish, off))  # type: ignore[arg-type]  # the policy validates deadline_s
    return end, {p for p in _completers(finish, off) if finish[p] <= end}


def overcommit(
    spec: RoundPolicySpec, k: int, finish: dict[int, float], off: dict[int, float]
) -> tuple[float, set[int]]:
    """Keep the first ``k`` completers; close at the k-th finish."""
    done = _completers(finish, off)
    if len(done) >= k:
        return finish[done[k - 1]], set(done[:k])
    return _all_resolved(finish, off), set(done)


POLICIES: dict[str, Policy] = {"wait_all": wait_all, "deadline": deadline, "overcommit": overcommit}


def status_of(pid: int, kept: set[int], end: float, finish: dict[int, float], off: dict[int, float]) -> str:
    """``ok`` (kept), ``dropped`` (went off before finishing, by the round's end) or ``late``."""
    if pid in kept:
        return "ok"
    return "dropped" if off[pid] < finish[pid] and off[pid] <= end else "late"


def metric_key(device: str) -> str:
    """metrics.jsonl column of a device type's cumulative energy."""
    return f"energy_J_{device.replace('-', '_')}"


# -------------------------------------------------------------------------- the model


class SystemModel:
    """Profiles, availability, virtual clock and energy totals of one run."""

    def __init__(self, scenario: Scenario) -> None:
        spec = scenario.system
        if spec is None:
            raise ValueError("the scenario has no system section")
        self.scenario, self.spec = scenario, spec
        self.num = scenario.clients.num
        self.profiles = assign_profiles(spec, self.num, scenario.seed)
        self.availability = AVAILABILITY[spec.availability.model](spec.availability, scenario.seed, self.num)
        self.compute_s = COMPUTE_MODELS[spec.compute]
        self.now = 0.0
        self.energy = {m.device: 0.0 for m in spec.mix}
        self._round_start = 0.0
        self._last: dict[str, Any] = {}

    # -- selection ---------------------------------------------------------------------

    def available(self, t: float) -> set[int]:
        """Partitions on at virtual time ``t``."""
        return {p for p in range(self.num) if self.availability.off_at(p, t) is not None}

    def start_round(self, per_round: int) -> tuple[set[int], int]:
        """The partitions that may be sampled now and how many to sample.

        With nobody available the clock first moves to the earliest time someone is.
        """
        waited_from = self.now
        avail = self.available(self.now)
        if not avail:
            t = min(self.availability.next_on(p, self.now) for p in range(self.num))
            if math.isinf(t):
                raise UserError(
                    f"system.availability: no client is available at or after virtual time {self.now:.1f} s "
                    "(has the trace ended?); extend the trace or run fewer rounds"
                )
            self.now = t
            avail = self.available(t)
        self._waited = self.now - waited_from
        self._round_start = self.now
        self._available = len(avail)
        count = per_round
        if self.spec.round.policy == "overcommit":
            count = math.ceil(self.spec.round.overcommit * per_round)
        self._keep = per_round
        return avail, count

    # -- closing a round ------------------------------------------------------------------

    def timing(self, server_round: int, pid: int, row: dict[str, Any]) -> ClientTiming:
        """The client's download, compute and upload seconds in this round."""
        device, link = self.profiles[pid]
        u_down, u_up = np.random.default_rng([self.scenario.seed, server_round, pid, JITTER_TAG]).random(2)
        return ClientTiming(
            download_s=direction_transfer_s(int(row.get("bytes_down", 0)), link, "downlink", float(u_down)),
            # an injected hang (faults.hang) makes the client's reply that much later
            compute_s=self.compute_s(self.scenario, device, row) + float(row.get("fault_hang_s") or 0.0),
            upload_s=direction_transfer_s(int(row.get("bytes_up", 0)), link, "uplink", float(u_up)),
        )

    def settle(self, server_round: int, rows: list[dict[str, Any]]) -> set[int]:
        """Time the round's train rows (annotated in place); the partitions to aggregate."""
        start = self._round_start
        timings: dict[int, ClientTiming] = {}
        off: dict[int, float] = {}
        for row in rows:
            if "error" in row:
                continue
            pid = int(row["partition_id"])
            timings[pid] = self.timing(server_round, pid, row)
            went_off = self.availability.off_at(pid, start)
            off[pid] = math.inf if went_off is None else went_off - start
        finish = {p: t.finish_s for p, t in timings.items()}
        end, kept = POLICIES[self.spec.round.policy](self.spec.round, self._keep, finish, off)
        counts = {"ok": 0, "dropped": 0, "late": 0}
        for row in rows:
            if "error" in row:
                continue
            pid = int(row["partition_id"])
            device, link = self.profiles[pid]
            t, status = timings[pid], status_of(pid, kept, end, finish, off)
            joules = energy_j(device, t, min(end, off[pid]))
            self.energy[device.name] += joules
            counts[status] += 1
            row.update(
                device=device.name,
                network=link.name,
                download_s=t.download_s,
                compute_s_virtual=t.compute_s,
                upload_s=t.upload_s,
                finish_s=t.finish_s,
                energy_J=joules,
                status=status,
            )
            if self.spec.split_plan is not None:
                row.update(split_choice(self.spec.split_plan, device, link))
        self.now = start + end
        self._last = {
            "round_virtual_s": self._waited + end,
            "clients_available": self._available,
            "dropped": counts["dropped"],
            "late": counts["late"],
        }
        return kept

    # -- rows and resume --------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        """metrics.jsonl columns after the latest round (cumulative time and energy)."""
        out: dict[str, Any] = {"virtual_time_s": self.now, "energy_J": sum(self.energy.values())}
        out.update({metric_key(d): j for d, j in self.energy.items()})
        out.update(self._last)
        return out

    def restore(self, row: dict[str, Any]) -> None:
        """Continue from a metrics row written by :meth:`metrics` (resume)."""
        self.now = float(row.get("virtual_time_s", 0.0))
        self.energy = {d: float(row.get(metric_key(d), 0.0)) for d in self.energy}
