"""Helpers for tests that run scenarios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: metrics that measure wall-clock time (the only ones allowed to differ between runs)
TIMING_KEYS = {"elapsed_s", "compute_s", "cpu_s"}


def cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real ``fedsim`` command line."""
    return subprocess.run(
        [sys.executable, "-m", "fedsim.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file, timing keys removed."""
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        out.append({k: v for k, v in row.items() if k not in TIMING_KEYS})
    return out


def final_arrays(run: Path) -> dict[str, np.ndarray]:
    """Global weights in the run's latest checkpoint."""
    ckpt = sorted((run / "checkpoints").glob("round-*.pt"))[-1]
    return torch.load(ckpt, weights_only=False)["arrays"]


def only_run(root: Path) -> Path:
    """The single run folder under ``root``."""
    found = [p for p in root.iterdir() if p.is_dir()]
    assert len(found) == 1, found
    return found[0]
