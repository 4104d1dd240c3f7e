"""``fedsim edge``: train BottleFit split models, export them to ONNX, evaluate and profile.

Mounted on the main command line as ``fedsim edge`` (``app.add_typer(fedsim.edge.cli.app, name="edge")``).
Errors a user can cause raise :class:`~fedsim.errors.UserError`, which ``fedsim``'s entry
point prints as one line with exit code 2. The commands live in :mod:`fedsim.edge.commands`
(one module per group); this module builds the ``app`` and registers the file kinds.
"""

from __future__ import annotations

from pathlib import Path

import typer

from fedsim.edge.commands.bench import bench
from fedsim.edge.commands.common import console
from fedsim.edge.commands.plan import plan
from fedsim.edge.commands.testbed import health, serve, worker
from fedsim.edge.commands.train import evaluate_, export, profile, train
from fedsim.errors import UserError
from fedsim.runner import KIND_RUNNERS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Edge split computing: BottleFit training, ONNX export, evaluation, profiling.",
)


@KIND_RUNNERS.register("bottlefit")
def _run_experiment(
    path: Path, overrides: list[str], stop_after: int | None, quiet: bool, threads: int
) -> None:
    """``fedsim run`` on a BottleFit experiment: ``fedsim edge train``."""
    train(path, overrides, None, stop_after, quiet, threads)


@KIND_RUNNERS.register("edge-bench")
def _run_bench(path: Path, overrides: list[str], stop_after: int | None, quiet: bool, threads: int) -> None:
    """``fedsim run`` on an edge bench: ``fedsim edge bench``."""
    if stop_after is not None:
        raise UserError(
            "--stop-after does not apply to an edge bench; expected it only for runs in rounds or steps"
        )
    bench(path, overrides, quiet)


# in the order ``fedsim edge --help`` lists them
app.command()(train)
app.command()(export)
app.command("evaluate")(evaluate_)
app.command()(profile)
app.command()(serve)
app.command()(worker)
app.command()(health)
app.command()(bench)
app.command()(plan)

__all__ = [
    "app",
    "bench",
    "console",
    "evaluate_",
    "export",
    "health",
    "plan",
    "profile",
    "serve",
    "train",
    "worker",
]
