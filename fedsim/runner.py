"""Starting and resuming runs: validate, create the folder, launch, summarise."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from fedsim.algorithms import build_strategy
from fedsim.config import Scenario
from fedsim.errors import RunFailed, UserError
from fedsim.loader import load_scenario, require_kind
from fedsim.progress import RoundProgress
from fedsim.registry import Registry
from fedsim.runstore import RunFolder, new_run_dir
from fedsim.runtimes import RUNTIMES, LaunchRequest
from fedsim.server.callbacks import summarise
from fedsim.workspace import federated_data


def write_report_safely(path: Path, console: Console) -> Path | None:
    """Write RUN/report.html; a failure prints one warning line and never costs the run."""
    try:
        from fedsim.report import write_report

        return write_report(path)
    except Exception as exc:
        console.print(
            f"[yellow]warning:[/yellow] report not written: {type(exc).__name__}: {exc}", highlight=False
        )
        return None


#: How ``fedsim run`` runs a file of a kind other than fl: ``(file, overrides, stop_after,
#: quiet, threads)``. The edge package registers its kinds (bottlefit, edge-bench).
KindRunner = Callable[[Path, list[str], int | None, bool, int], None]
KIND_RUNNERS: Registry[KindRunner] = Registry("runner of a kind of file")

#: Where the traceback of a run that failed inside fedsim goes.
ERROR_LOG = "error.log"


def failed(folder: RunFolder, exc: Exception) -> UserError | RunFailed:
    """Mark the run folder failed with the reason of ``exc``; the one-line error to raise.

    A :class:`RunFailed` names its own log; any other exception (a bug, a crash in a
    client) has its traceback written to ``RUN/error.log``.
    """
    if isinstance(exc, UserError | RunFailed):
        _mark_failed(folder, str(exc))
        return exc
    log = folder.path / ERROR_LOG
    log.write_text("".join(traceback.format_exception(exc)))
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    _mark_failed(folder, reason)
    return RunFailed(f"the run failed: {reason}", log)


def _mark_failed(folder: RunFolder, reason: str) -> None:
    """summary.json says ``failed`` and why (with the rows written so far, when they can be read)."""
    try:
        summarise(folder, "failed", None, {"error": reason})
    except Exception:  # a folder too broken to summarise still says why it failed
        folder.write_summary({**folder.summary(), "status": "failed", "error": reason})


def _launch(request: LaunchRequest, show: bool, console: Console, start: int) -> dict[str, Any]:
    sc = request.scenario
    try:
        with RoundProgress(sc.name, sc.rounds, start, enabled=show, console=console) as bar:
            req = LaunchRequest(
                sc, request.folder, request.resume, [bar], request.stop_after, request.verbose
            )
            RUNTIMES.get(sc.runtime.name)(req)
    except Exception as exc:
        raise failed(request.folder, exc) from exc
    write_report_safely(request.folder.path, console)
    return request.folder.summary()


def start_run(
    path: Path, overrides: list[str], stop_after: int | None, show: bool, verbose: bool, console: Console
) -> tuple[RunFolder, dict[str, Any]]:
    """Validate everything (data included), then create a new run folder and run."""
    require_kind(path, "fl", default=True)
    scenario = load_scenario(path, overrides)
    federated_data(scenario)  # data errors surface before anything is written
    folder = RunFolder(new_run_dir(scenario))
    folder.create(scenario)
    return folder, run_in(folder, scenario, stop_after, show, verbose, console)


def run_in(
    folder: RunFolder,
    scenario: Scenario,
    stop_after: int | None,
    show: bool,
    verbose: bool,
    console: Console,
) -> dict[str, Any]:
    """Run ``scenario`` from its first round in a folder :meth:`RunFolder.create` wrote for it."""
    return _launch(LaunchRequest(scenario, folder, False, (), stop_after, verbose), show, console, 0)


def _check_resumable(scenario: Scenario) -> None:
    if scenario.runtime.name != "inprocess" and build_strategy(scenario).stateful_clients:
        raise UserError(
            f"algorithm {scenario.algorithm.name!r} keeps client state, which only the inprocess runtime "
            "checkpoints; resume with --runtime inprocess"
        )


def resume_run(
    path: Path, runtime: str | None, stop_after: int | None, show: bool, verbose: bool, console: Console
) -> tuple[RunFolder, dict[str, Any]]:
    """Continue a run from its latest checkpoint."""
    if not path.is_dir():
        raise UserError(f"{path}: no such run folder; expected a folder written by 'fedsim run'")
    folder = RunFolder(path)
    scenario = folder.scenario()
    summary = folder.summary()
    if summary.get("status") == "completed":
        return folder, summary
    if runtime:
        scenario = scenario.model_copy(
            update={"runtime": scenario.runtime.model_copy(update={"name": runtime})}
        )
        if runtime not in RUNTIMES:
            raise UserError(f"unknown runtime {runtime!r}; expected one of: {', '.join(RUNTIMES.names())}")
    _check_resumable(scenario)
    ckpt = folder.latest_checkpoint()
    start = int(ckpt.stem.split("-")[1]) if ckpt else 0
    return folder, _launch(
        LaunchRequest(scenario, folder, True, (), stop_after, verbose), show, console, start
    )
