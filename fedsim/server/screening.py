"""Replies checked before aggregation: what a round must not average into the global model,
and the clients.jsonl row of every reply (:func:`client_rows`).

A train reply is rejected, with its reason in its clients.jsonl row (``rejected``), when it
comes from a node that was not asked this round, when its reply was lost to an injected
``drop_reply`` fault, when any of its float arrays holds NaN or Inf, or when its arrays do
not have the keys, shapes and dtypes of the strategy's template (the global model, for FedAvg
and the algorithms built on it).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message

from fedsim.faults import DROPPED_KEY, HANG_KEY, dropped
from fedsim.records import array_view, record_nbytes
from fedsim.strategies.base import FedsimStrategyMixin


def problem(reply: Message, asked: set[int], template: ArrayRecord | None) -> str | None:
    """Why ``reply`` must not be aggregated, or None."""
    node = reply.metadata.src_node_id
    if node not in asked:
        return f"node {node} was not asked this round"
    if dropped(reply):
        return "reply lost (faults.drop_reply)"
    records = reply.content.array_records
    if template is not None:
        got = records.get("arrays")
        if got is None:
            return "no arrays in the reply"
        if got.keys() != template.keys():
            missing, extra = sorted(template.keys() - got.keys()), sorted(got.keys() - template.keys())
            return f"arrays do not match the model: missing {missing[:3]}, unexpected {extra[:3]}"
        for key, expected in template.items():
            a = got[key]
            if tuple(a.shape) != tuple(expected.shape) or a.dtype != expected.dtype:
                want = f"{expected.dtype} {list(expected.shape)}"
                return f"array {key} is {a.dtype} {list(a.shape)}, expected {want}"
    for record in records.values():
        for key, arr in record.items():
            values = array_view(arr)
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                return f"array {key} holds NaN or Inf"
    return None


#: Metrics only some replies carry (a cohort's chunk, an injected fault's mark): kept in the
#: clients' rows and taken out of the replies before aggregation.
OPTIONAL_METRICS = ("cohort-chunk", HANG_KEY, DROPPED_KEY)


def _as_from_destination(reply: Message, sent: Sequence[Message], nodes: Collection[int]) -> Message:
    """An error reply the SuperLink makes for a node that is gone (it does not come from that
    node) as the error reply of the node the message was sent to."""
    if reply.metadata.src_node_id in nodes or not reply.has_error():
        return reply
    to = next((m for m in sent if m.metadata.message_id == reply.metadata.reply_to_message_id), None)
    if to is None:
        return reply
    return Message(reply.error, reply_to=to)


def client_rows(
    server_round: int,
    phase: str,
    sent: Sequence[Message],
    replies: Iterable[Message],
    strategy: FedsimStrategyMixin,
    template: ArrayRecord | None = None,
) -> tuple[list[dict[str, Any]], list[Message]]:
    """A row per reply (its metrics, its error, or why it is rejected: see
    :mod:`fedsim.server.screening`) and the replies accepted for aggregation."""
    down = {m.metadata.dst_node_id: record_nbytes(m.content) for m in sent}
    asked = set(down)
    replies = [_as_from_destination(r, sent, strategy.node_ids) for r in replies]
    known = [r for r in replies if r.metadata.src_node_id in strategy.node_ids]
    rows: list[dict[str, Any]] = []
    ok = []
    for reply in strategy.ordered(known):
        node = reply.metadata.src_node_id
        row: dict[str, Any] = {
            "round": server_round,
            "phase": phase,
            "partition_id": strategy.partition_of(reply),
            "bytes_down": down.get(node, 0),
        }
        if reply.has_error():
            row["error"] = reply.error.reason
        else:
            metrics = next(iter(reply.content.metric_records.values()))
            row["bytes_up"] = record_nbytes(reply.content)
            for key, value in metrics.items():
                if key != "partition-id":  # NaN (no value, e.g. an empty class group): null
                    missing = isinstance(value, float) and math.isnan(value)
                    row[key.replace("-", "_")] = None if missing else value
            reason = problem(reply, asked, template)
            for key in OPTIONAL_METRICS:  # recorded in the row; Flower's check wants the same keys
                metrics.pop(key, None)
            if reason is None:
                ok.append(reply)
            else:
                row["rejected"] = reason
        rows.append(row)
    for reply in replies:  # from nodes the run does not know
        if reply.metadata.src_node_id not in strategy.node_ids:
            reason = problem(reply, asked, None)
            rows.append(
                {
                    "round": server_round,
                    "phase": phase,
                    "partition_id": None,
                    "bytes_down": 0,
                    "rejected": reason,
                }
            )
    return rows, ok


def past_deadline(
    server_round: int,
    sent: Sequence[Message],
    rows: list[dict[str, Any]],
    ok: list[Message],
    strategy: FedsimStrategyMixin,
    deadline: float,
) -> tuple[list[dict[str, Any]], list[Message]]:
    """``runtime.round_deadline_s`` applied: a row for each asked node that did not answer in
    time, and replies whose reported seconds (compute, plus an injected hang) pass the deadline
    rejected as late."""
    answered = {r.get("partition_id") for r in rows}
    for msg in sent:
        pid = strategy.pid_of_node(msg.metadata.dst_node_id)
        if pid not in answered:
            rows.append(
                {
                    "round": server_round,
                    "phase": "train",
                    "partition_id": pid,
                    "bytes_down": record_nbytes(msg.content),
                    "rejected": f"no reply within runtime.round_deadline_s={deadline:g} s",
                }
            )
    late = set()
    for row in rows:
        seconds = float(row.get("compute_s") or 0.0) + float(row.get("fault_hang_s") or 0.0)
        if "rejected" not in row and "error" not in row and seconds > deadline:
            row["rejected"] = f"reply after {seconds:.3g} s, past runtime.round_deadline_s={deadline:g} s"
            late.add(row["partition_id"])
    rows.sort(key=lambda r: (r["partition_id"] is None, r["partition_id"] or 0))
    return rows, [m for m in ok if strategy.partition_of(m) not in late]
