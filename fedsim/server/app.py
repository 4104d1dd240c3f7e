"""fedsim's ServerApp: the same code runs on every runtime.

The run config carries the resolved scenario (``scenario``, JSON), the run folder
(``run-dir``) and whether to continue from its latest checkpoint (``resume``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsim.algorithms import build_strategy
from fedsim.runstore import METRICS_FILE, RunFolder
from fedsim.server.callbacks import Checkpointer, RowWriter, summarise
from fedsim.server.checkpoint import load_checkpoint
from fedsim.server.rounds import DISCOVERY_TIMEOUT_S, Callback, RoundLoop, discover
from fedsim.system.clock import SystemModel
from fedsim.workspace import scenario_of

app = ServerApp()


def run_server(
    grid: Grid, context: Context, callbacks: Sequence[Callback] = (), stop_after: int | None = None
) -> RoundLoop:
    """Run (or resume) the scenario in ``context.run_config`` on ``grid``."""
    cfg = context.run_config
    scenario = scenario_of(str(cfg["scenario"]))
    folder = RunFolder(Path(str(cfg["run-dir"])))
    strategy = build_strategy(scenario)
    deployed = scenario.runtime.name == "deployment"
    wait_s = scenario.runtime.deployment.wait_s if deployed else DISCOVERY_TIMEOUT_S
    strategy.setup(
        scenario, discover(grid, scenario, wait_s, lambda k, n: folder.write_waiting(k, n, wait_s))
    )
    writers: list[Callback] = [RowWriter(folder), Checkpointer(folder, scenario.output.checkpoint_every)]
    system = SystemModel(scenario) if scenario.system is not None else None

    ckpt_path = folder.latest_checkpoint() if bool(cfg.get("resume", False)) else None
    if ckpt_path is not None:
        ckpt = load_checkpoint(ckpt_path)
        strategy.load_state_dict(ckpt.strategy)
        if ckpt.client_states is not None and hasattr(grid, "restore_client_states"):
            grid.restore_client_states(ckpt.client_states)
        folder.truncate_after(ckpt.round)
        if system is not None:  # the clock and energy totals continue from the last row kept
            system.restore(folder.read(METRICS_FILE)[-1])
        loop = RoundLoop(
            scenario, strategy, grid, ckpt.arrays, [*writers, *callbacks], ckpt.round, ckpt.elapsed_s, system
        )
    else:
        if bool(cfg.get("resume", False)):
            folder.truncate_after(-1)
        loop = RoundLoop(
            scenario, strategy, grid, strategy.initial_arrays(), [*writers, *callbacks], system=system
        )
        loop.initial_evaluation()
    status = "failed"
    try:
        loop.run(stop_after=stop_after)
        status = "completed" if loop.round >= scenario.rounds else "stopped"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        summarise(folder, status, loop)
    return loop


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point when Flower runs the app (Simulation or Deployment Engine)."""
    stop = context.run_config.get("stop-after", 0)
    run_server(grid, context, stop_after=int(stop) or None)
