"""Replies checked before aggregation: what a round must not average into the global model.

A train reply is rejected, with its reason in its clients.jsonl row (``rejected``), when it
comes from a node that was not asked this round, when its reply was lost to an injected
``drop_reply`` fault, when any of its float arrays holds NaN or Inf, or when its arrays do
not have the keys, shapes and dtypes of the strategy's template (the global model, for FedAvg
and the algorithms built on it).
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Message

from fedsim.faults import dropped
from fedsim.records import array_view


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
