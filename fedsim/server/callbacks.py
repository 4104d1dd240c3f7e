"""Callbacks writing a run folder: rows, checkpoints, summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedsim.algorithms import cohort_plan
from fedsim.runstore import CLIENTS_FILE, METRICS_FILE, RunFolder
from fedsim.server.checkpoint import Checkpoint, save_checkpoint

if TYPE_CHECKING:
    from fedsim.server.rounds import RoundLoop, RoundResult


class RowWriter:
    """Appends the round's metrics row and client rows to the run folder."""

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder

    def on_round_end(self, result: RoundResult, loop: RoundLoop) -> None:
        """Write metrics.jsonl and clients.jsonl lines."""
        self.folder.append(CLIENTS_FILE, result.clients)
        self.folder.append(METRICS_FILE, [result.metrics])


class Checkpointer:
    """Saves a checkpoint every N rounds and after the last round."""

    def __init__(self, folder: RunFolder, every: int) -> None:
        self.folder = folder
        self.every = every

    def on_round_end(self, result: RoundResult, loop: RoundLoop) -> None:
        """Checkpoint when the cadence (or the end of the run) says so."""
        r = result.round
        due = r == loop.scenario.rounds or (self.every and r % self.every == 0)
        if r == 0 or not due:
            return
        states = loop.grid.client_states() if hasattr(loop.grid, "client_states") else None
        ckpt = Checkpoint(r, loop.arrays, loop.strategy.state_dict(), states, loop.elapsed_s)
        save_checkpoint(self.folder.checkpoint_path(r), ckpt)


def summarise(
    folder: RunFolder, status: str, loop: RoundLoop | None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Build and write summary.json from the rows written so far."""
    import flwr
    import torch

    import fedsim

    rows = folder.read(METRICS_FILE)
    acc = [r["server_accuracy"] for r in rows if "server_accuracy" in r]
    scenario = folder.scenario()
    vectorised, why = cohort_plan(scenario)
    summary = {
        "name": scenario.name,
        "algorithm": scenario.algorithm.name,
        "runtime": scenario.runtime.name,
        "workers": getattr(loop.grid if loop else None, "num_workers", scenario.runtime.workers),
        "engine": scenario.runtime.engine if scenario.runtime.name == "ray" else None,
        "round_wall_s": loop.wall_summary() if loop else None,
        "train_path": {"vectorised": vectorised, "why": why},
        "status": status,
        "rounds_planned": scenario.rounds,
        "rounds_completed": rows[-1]["round"] if rows else 0,
        "final": rows[-1] if rows else {},
        "best_server_accuracy": max(acc) if acc else None,
        "final_server_accuracy": acc[-1] if acc else None,
        "elapsed_s": loop.elapsed_s if loop else (rows[-1].get("elapsed_s") if rows else 0.0),
        "versions": {"fedsim": fedsim.__version__, "flwr": flwr.__version__, "torch": torch.__version__},
        **(extra or {}),
    }
    folder.write_summary(summary)
    return summary
