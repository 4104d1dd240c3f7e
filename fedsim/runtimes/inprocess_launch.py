"""Launching a run on the ``inprocess`` runtime."""

from __future__ import annotations

import logging
import os

from flwr.app import Context, RecordDict

from fedsim.apps import CLIENTAPP, COHORT_HANDLER, load_app
from fedsim.runtimes.inprocess import InProcessGrid, LocalGrid
from fedsim.runtimes.registry import RUNTIMES, LaunchRequest
from fedsim.runtimes.sharded import ShardedGrid


def serve_here(request: LaunchRequest, grid: LocalGrid) -> None:
    """Run the ServerApp's loop in this process on ``grid``; close the grid's workers after."""
    from fedsim.server.app import run_server

    run_config = request.run_config()
    for callback in request.callbacks:  # a progress bar shows the clients of a long round
        if hasattr(callback, "clients_done"):
            grid.on_progress = callback.clients_done
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    if not request.verbose:
        flwr_logger.setLevel(logging.WARNING)
    try:
        run_server(grid, context, request.callbacks, request.stop_after)
    finally:
        flwr_logger.setLevel(level)
        if isinstance(grid, ShardedGrid):
            grid.close()


@RUNTIMES.register(
    "inprocess", summary="fedsim's own Grid: clients in this process, or in runtime.workers processes"
)
def launch(request: LaunchRequest) -> None:
    """Deliver messages straight to the ClientApp: in this process, or in ``runtime.workers``
    worker processes holding shards of the clients (0: one per CPU)."""
    import torch

    run_config = request.run_config()
    runtime, num = request.scenario.runtime, request.scenario.clients.num
    cpus = os.cpu_count() or 1
    workers = runtime.workers or cpus
    if workers > 1:
        threads = runtime.threads or max(1, cpus // workers)
        grid = ShardedGrid(CLIENTAPP, num, run_config, workers, threads, cohort_ref=COHORT_HANDLER)
        serve_here(request, grid)
        return
    before = torch.get_num_threads()
    torch.set_num_threads(runtime.threads or before)
    try:
        app, cohort = load_app(CLIENTAPP), load_app(COHORT_HANDLER)
        serve_here(request, InProcessGrid(app, num, run_config, cohort=cohort))
    finally:
        torch.set_num_threads(before)
