"""Partition files for real devices: one ``.npz`` per client, written by ``fedsim data export``.

A SuperNode on a device needs only its own file, given in its node config
(``flower-supernode ... --node-config "partition-file=/data/client-3.npz"``); the
ClientApp then reads its data from the file instead of building the dataset.

Format (``numpy.savez_compressed``, readable with ``numpy.load(path)``, no pickle)::

    x_train   float32 [n_train, *input_shape]   the client's training samples
    y_train   int64   [n_train]                  their labels
    x_test    float32 [n_test, *input_shape]     the client's local test set
    y_test    int64   [n_test]
    meta      0-d str                            JSON: format, scenario, fingerprint,
                                                 partition_id, num_partitions, dataset,
                                                 input_shape, num_classes

``fingerprint`` is a hash of what decides the partition (``seed``, ``data``,
``clients.num``): a file exported for another scenario (another seed, dataset,
partition or number of clients) is refused, whatever the file is called.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsim.config import Scenario
from fedsim.errors import UserError
from fedsim.memo import Memo, memo
from fedsim.workspace import ClientData, client_data, federated_data

FORMAT = "fedsim-partition/1"
ARRAYS = ("x_train", "y_train", "x_test", "y_test")
#: The node-config key naming a SuperNode's partition file.
NODE_CONFIG_KEY = "partition-file"


class PartitionFileError(UserError):
    """A SuperNode's partition file is missing, unreadable or of another scenario."""


def fingerprint(scenario: Scenario) -> str:
    """A short hash of everything that decides the clients' data (seed, data, clients.num)."""
    doc = {
        "seed": scenario.seed,
        "data": scenario.data.model_dump(mode="json"),
        "num_clients": scenario.clients.num,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def partition_filename(partition_id: int) -> str:
    """The file name of a partition inside an export folder."""
    return f"client-{partition_id}.npz"


def export_partitions(scenario: Scenario, out: Path) -> list[Path]:
    """Write one partition file per client into ``out`` (created); return their paths.

    Parameters
    ----------
    scenario : Scenario
        The resolved scenario whose partition is exported.
    out : Path
        Destination folder; existing files of the same names are replaced.
    """
    ds = federated_data(scenario).dataset
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "scenario": scenario.name,
        "fingerprint": fingerprint(scenario),
        "num_partitions": scenario.clients.num,
        "dataset": scenario.data.dataset,
        "input_shape": list(ds.input_shape),
        "num_classes": int(ds.num_classes),
    }
    paths = []
    for pid in range(scenario.clients.num):
        data = client_data(scenario, pid)
        path = out / partition_filename(pid)
        arrays = {name: getattr(data, name).numpy() for name in ARRAYS}
        np.savez_compressed(path, meta=np.array(json.dumps({**meta, "partition_id": pid})), **arrays)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class Partition:
    """One client's data as read from its partition file."""

    partition_id: int
    data: ClientData
    meta: dict[str, Any]


_FILES: Memo[Partition] = memo("data.partition_file", 4)  # key: (path, mtime in ns)


def _load(path: str, mtime_ns: int) -> Partition:
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            arrays = {name: torch.from_numpy(npz[name]) for name in ARRAYS}
    except (OSError, ValueError, KeyError) as exc:
        raise PartitionFileError(
            f"partition file {path}: not a fedsim partition file ({type(exc).__name__}); "
            "expected a client-N.npz written by 'fedsim data export SCENARIO OUTDIR'"
        ) from None
    if meta.get("format") != FORMAT:
        raise PartitionFileError(f"partition file {path}: format {meta.get('format')!r}; expected {FORMAT!r}")
    return Partition(int(meta["partition_id"]), ClientData(**arrays), meta)


def read_partition(path: Path | str, scenario: Scenario) -> Partition:
    """Read a partition file and check that it was exported for ``scenario``.

    Raises
    ------
    PartitionFileError
        The file is missing, not a partition file, or of another scenario.
    """
    file = Path(path)
    if not file.is_file():
        raise PartitionFileError(
            f"partition file {file} not found on this SuperNode; expected the client-N.npz written by "
            "'fedsim data export SCENARIO OUTDIR' at that path"
        )
    key = (str(file.resolve()), file.stat().st_mtime_ns)
    part = _FILES.get(key, lambda: _load(*key))
    expected = fingerprint(scenario)
    if part.meta.get("fingerprint") != expected:
        raise PartitionFileError(
            f"partition file {file} belongs to scenario {part.meta.get('scenario')!r} "
            f"(data fingerprint {part.meta.get('fingerprint')}), not to {scenario.name!r} ({expected}); "
            "export this scenario's partitions with 'fedsim data export' and copy them to the devices"
        )
    return part


def node_partition(node_config: dict[str, Any], scenario: Scenario) -> tuple[int, ClientData]:
    """A node's partition id and data: from its partition file, else (simulation) from its id."""
    if NODE_CONFIG_KEY in node_config:
        part = read_partition(str(node_config[NODE_CONFIG_KEY]), scenario)
        return part.partition_id, part.data
    if "partition-id" in node_config:
        pid = int(node_config["partition-id"])
        return pid, client_data(scenario, pid)
    raise PartitionFileError(
        f"this SuperNode has no {NODE_CONFIG_KEY} in its node config; start it with "
        f"--node-config \"{NODE_CONFIG_KEY}=/data/client-N.npz\" (written by 'fedsim data export')"
    )
