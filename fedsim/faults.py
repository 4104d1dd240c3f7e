"""Injected client faults (a scenario's ``faults:`` section): which client misbehaves how.

A fault is drawn per (run seed, round, partition id, kind), so the ClientApp that commits it
and the server that records it agree without a word, on every runtime. The ClientApp acts
(:func:`misbehave`): ``crash`` raises, ``hang`` waits on Flower's engines (where messages
travel and the round's deadline is a timeout) and reports its seconds everywhere (fedsim's
grids judge them against ``runtime.round_deadline_s``, the virtual clock of a ``system:``
section adds them to the client's time), ``corrupt`` spoils the update it sends, and
``drop_reply`` marks its reply as lost, which the server then discards as a network would
(:data:`DROPPED_KEY`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import cast

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord

from fedsim.config import FaultRate, Scenario
from fedsim.records import array_view, arrays_to_numpy, numpy_to_arrays
from fedsim.strategies.base import ATTEMPT_KEY

#: Salt of each fault kind's random stream (the order kinds are checked in).
KIND_SALTS = {"crash": 0xC4A5, "drop_reply": 0xD40B, "hang": 0x4A96, "corrupt": 0xC044}
#: Metric a reply carries when its fault says it never arrives; the server discards it.
DROPPED_KEY = "fault-dropped"
#: Metric a reply carries when it comes late: the seconds (the virtual clock adds them).
HANG_KEY = "fault-hang-s"


class InjectedCrash(RuntimeError):
    """The crash a scenario's ``faults.crash`` asked for."""


def struck_clients(spec: FaultRate, seed: int, num_clients: int, salt: int) -> set[int] | None:
    """The partition ids ``spec`` may strike (None: every client)."""
    if spec.clients is None:
        return None
    if isinstance(spec.clients, list):
        return set(spec.clients)
    return set(_drawn(spec.clients, seed, num_clients, salt))


@functools.lru_cache(maxsize=32)
def _drawn(fraction: float, seed: int, num_clients: int, salt: int) -> frozenset[int]:
    """A fraction of the clients drawn once from the seed (asked per client and round: kept)."""
    count = max(1, round(fraction * num_clients))
    picked = np.random.default_rng([seed, salt, 0xF0]).choice(num_clients, size=count, replace=False)
    return frozenset(int(p) for p in picked)


def faults_of(scenario: Scenario, server_round: int, pid: int, attempt: int = 0) -> list[str]:
    """The faults that strike client ``pid`` in training round ``server_round`` (``attempt``: the
    how-many-th new sample of a retried round), in the order they act (a crash ends the call; a
    dropped reply is never seen late or corrupt)."""
    out = []
    for name, spec in scenario.faults.injected().items():
        salt = KIND_SALTS[name]
        allowed = struck_clients(spec, scenario.seed, scenario.clients.num, salt)
        if allowed is not None and pid not in allowed:
            continue
        key = [scenario.seed, server_round, pid, salt] + ([attempt] if attempt else [])
        if np.random.default_rng(key).random() < spec.rate:
            out.append(name)
    return sorted(out, key=list(KIND_SALTS).index)


def misbehave(
    scenario: Scenario, server_round: int, pid: int, msg: Message, answer: Callable[[], Message]
) -> Message:
    """The reply of a client that commits its injected faults around ``answer()``."""
    config = msg.content.config_records.get("config")
    attempt = int(cast(int, config[ATTEMPT_KEY])) if config and ATTEMPT_KEY in config else 0
    faults = faults_of(scenario, server_round, pid, attempt)
    if "crash" in faults:
        raise InjectedCrash(f"injected fault: client {pid} crashed in round {server_round} (faults.crash)")
    reply = answer()
    if reply.has_error():
        return reply
    metrics = next(iter(reply.content.metric_records.values()))
    if "drop_reply" in faults:
        metrics[DROPPED_KEY] = 1
        return reply
    if "hang" in faults:
        seconds = scenario.faults.hang.seconds
        metrics[HANG_KEY] = seconds
        if scenario.runtime.exchanges_messages():  # really late; fedsim's grids judge the seconds
            time.sleep(seconds)
    if "corrupt" in faults and "arrays" in reply.content.array_records:
        sent = msg.content.array_records.get("arrays")
        reply.content["arrays"] = corrupted(reply.content.array_records["arrays"], sent, scenario)
    return reply


def corrupted(arrays: ArrayRecord, start: ArrayRecord | None, scenario: Scenario) -> ArrayRecord:
    """``arrays`` spoilt as ``faults.corrupt`` says: NaN or Inf in every float array, or the
    update (``arrays - start``) scaled by ``faults.corrupt.scale``."""
    spec = scenario.faults.corrupt
    out = {}
    for key, value in arrays_to_numpy(arrays).items():
        if value.dtype.kind != "f":
            out[key] = value
        elif spec.mode == "scale" and start is not None and key in start:
            base = array_view(start[key])
            out[key] = (base + spec.scale * (value - base)).astype(value.dtype)
        else:
            out[key] = np.full_like(value, np.nan if spec.mode == "nan" else np.inf)
    return numpy_to_arrays(out)


def dropped(reply: Message) -> bool:
    """Whether ``reply`` is one its client's fault says never arrives."""
    if reply.has_error():
        return False
    return any(DROPPED_KEY in r for r in reply.content.metric_records.values() if isinstance(r, MetricRecord))
