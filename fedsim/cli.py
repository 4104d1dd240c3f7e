"""The ``fedsim`` command line.

Errors a user can cause print one line (``error: ...``) and exit with code 2,
without a traceback and without touching earlier results.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from fedsim.errors import RunFailed, UserError

app = typer.Typer(add_completion=False, no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _mount_edge() -> None:
    from fedsim.edge.cli import app as edge_app

    app.add_typer(edge_app, name="edge", help="Split computing: BottleFit training, export, evaluation.")


_mount_edge()

SetOption = Annotated[list[str] | None, typer.Option("--set", help="Override KEY.PATH=VALUE (repeatable).")]


class Catalogue(StrEnum):
    """What ``fedsim list`` can list."""

    algorithms = "algorithms"
    datasets = "datasets"
    models = "models"
    partitions = "partitions"
    runtimes = "runtimes"
    kinds = "kinds"
    pretrained = "pretrained"


def _registry(what: Catalogue):
    if what is Catalogue.algorithms:
        from fedsim.algorithms import ALGORITHMS as STRATEGIES

        return STRATEGIES
    if what is Catalogue.datasets:
        from fedsim.data import DATASETS

        return DATASETS
    if what is Catalogue.models:
        from fedsim.models import MODELS

        return MODELS
    if what is Catalogue.partitions:
        from fedsim.data import PARTITIONERS

        return PARTITIONERS
    if what is Catalogue.kinds:
        from fedsim.loader import KINDS

        return KINDS
    from fedsim.runtimes import RUNTIMES

    return RUNTIMES


@app.command("list")
def list_(what: Annotated[Catalogue, typer.Argument(help="What to list.")]) -> None:
    """List registered components with their parameters (or the named pretrained weights)."""
    from rich.table import Table

    if what is Catalogue.pretrained:
        _list_pretrained()
        return
    table = Table(title=what.value, show_lines=False)
    table.add_column("name", style="bold")
    table.add_column("parameters")
    table.add_column("summary")
    for entry in _registry(what):
        params = ", ".join(
            f"{k}={'required' if f.is_required() else f.default!r}"
            for k, f in entry.params.model_fields.items()
        )
        table.add_row(entry.name, params or "-", entry.summary)
    console.print(table)


def _list_pretrained() -> None:
    from rich.table import Table

    from fedsim.pretrained import CATALOG

    table = Table(title="pretrained (install with 'make pretrained')", show_lines=False)
    for column in ("name", "model", "layout", "installed", "licence", "summary"):
        table.add_column(column, style="bold" if column == "name" else None)
    for name, named in CATALOG.items():
        installed = "yes" if named.path() is not None else f"no: {named.requirement}"
        table.add_row(name, named.model, named.layout, installed, named.license, named.summary)
    console.print(table)


SweepOption = Annotated[
    list[str] | None,
    typer.Option("--sweep", help="Sweep KEY.PATH over V1,V2,... (repeatable; adds to sweep:)."),
]


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="Scenario, BottleFit experiment or edge bench YAML file.")],
    set_: SetOption = None,
    sweep: SweepOption = None,
) -> None:
    """Check a file of any kind (fl, bottlefit, edge-bench; every cell of a sweep) without running it."""
    from fedsim.loader import validate_file

    line = validate_file(file, set_ or [], sweep or [])
    console.print(f"[green]ok[/green] {escape(line)}", highlight=False, soft_wrap=True)


def _mount_algorithm_commands() -> None:
    """The verbs algorithms register (``fedsim pretrain`` of the prompt algorithms)."""
    from fedsim.algorithms import Command, commands

    def mount(command: Command) -> None:
        def verb(scenario: Path, set_: SetOption = None, out: Path | None = None) -> None:
            from fedsim.loader import load_scenario

            line = command.run(load_scenario(scenario, set_ or []), out)
            console.print(line, highlight=False, soft_wrap=True)

        verb.__annotations__ = {  # real objects: typer reads the options from them
            "scenario": Path,
            "set_": SetOption,
            "out": Annotated[Path | None, typer.Option(help=command.out_help)],
            "return": None,
        }
        app.command(command.name, help=command.help)(verb)

    for command in commands():
        mount(command)


_mount_algorithm_commands()


@app.command()
def run(
    file: Annotated[
        Path | None, typer.Argument(help="Experiment file of any kind (fl, bottlefit, edge-bench).")
    ] = None,
    set_: SetOption = None,
    sweep: SweepOption = None,
    jobs: Annotated[int, typer.Option(help="Cells of a sweep run side by side.", min=1)] = 1,
    runtime: Annotated[str | None, typer.Option(help="inprocess (default), ray or deployment.")] = None,
    superlink: Annotated[
        str | None, typer.Option(help="deployment: the SuperLink's HOST:PORT (runtime.deployment.superlink).")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="ray: join this cluster, auto or HOST:PORT (runtime.ray.address).")
    ] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run (or sweep) in this folder.")] = None,
    stop_after: Annotated[
        int | None, typer.Option(help="Stop after this round (BottleFit: step); resumable.", min=1)
    ] = None,
    threads: Annotated[int, typer.Option(help="BottleFit: torch threads (0: torch's default).", min=0)] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Flower's logs.")] = False,
) -> None:
    """Run an experiment file of any kind, every cell of its sweep, or resume a run or sweep."""
    from fedsim.loader import read_file
    from fedsim.runner import KIND_RUNNERS, resume_run, start_run
    from fedsim.sweep import is_sweep, resume_sweep, start_sweep

    if (file is None) == (resume is None):
        raise UserError("give either a FILE or --resume RUN_FOLDER")
    show = not quiet and console.is_terminal
    if resume is not None:
        if set_ or superlink or ray_address or sweep:
            raise UserError(
                "--set, --sweep, --superlink and --ray-address cannot change a run being resumed; "
                "start a new run instead"
            )
        if is_sweep(resume):
            _print_sweep(resume_sweep(resume, jobs, stop_after, console))
            return
        folder, summary = resume_run(resume, runtime, stop_after, show, verbose, console)
        _print_run(folder.path, summary)
        return
    assert file is not None
    overrides = list(set_ or []) + ([f"runtime.name={runtime}"] if runtime else [])
    overrides += [f"runtime.deployment.superlink={superlink}"] if superlink else []
    overrides += [f"runtime.ray.address={ray_address}"] if ray_address else []
    contents = read_file(file, overrides, sweep or [])
    if contents.sweep is not None:
        _print_sweep(start_sweep(contents, jobs, stop_after, console))
        return
    if contents.kind != "fl":
        KIND_RUNNERS.get(contents.kind)(file, list(set_ or []), stop_after, quiet, threads)
        return
    folder, summary = start_run(file, overrides, stop_after, show, verbose, console)
    _print_run(folder.path, summary)


def _print_run(path: Path, summary: dict) -> None:
    acc = summary.get("final_server_accuracy")
    acc_text = f", test accuracy {acc:.4f}" if acc is not None else ""
    console.print(
        f"{summary['status']}: {summary['rounds_completed']}/{summary['rounds_planned']} rounds{acc_text}; "
        f"results in {path}"
    )


def _print_sweep(path: Path) -> None:
    from fedsim.sweep import SUMMARY_FILE, TABLE_FILE

    summary = json.loads((path / SUMMARY_FILE).read_text())
    done = sum(s == "completed" for s in summary["cells"].values())
    console.print((path / TABLE_FILE).read_text(), highlight=False, markup=False, soft_wrap=True)
    console.print(
        f"{summary['status']}: {done}/{len(summary['cells'])} cells; results in {path}",
        highlight=False,
        soft_wrap=True,
    )


data_app = typer.Typer(no_args_is_help=True, help="Data for real devices.")
app.add_typer(data_app, name="data")


@data_app.command("export")
def data_export(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    outdir: Annotated[Path, typer.Argument(help="Folder for client-N.npz (one per client).")],
    set_: SetOption = None,
) -> None:
    """Write one partition file per client (its training and local test set) for SuperNodes."""
    from fedsim.data.export import export_partitions
    from fedsim.loader import load_scenario

    sc = load_scenario(scenario, set_ or [])
    paths = export_partitions(sc, outdir)
    console.print(
        f"{len(paths)} partition files of {sc.name} in {outdir} "
        f"(client-0.npz .. client-{len(paths) - 1}.npz)",
        highlight=False,
    )


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders.")],
    by_algorithm: Annotated[
        bool,
        typer.Option("--by-algorithm", help="Mean ± std of final values per algorithm (e.g. over seeds)."),
    ] = False,
    target_accuracy: Annotated[
        float | None,
        typer.Option(
            help="Add rounds, virtual time and energy to reach this generic accuracy.", min=0, max=1
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Also write OUT/report.html with the runs' figures overlaid.")
    ] = None,
) -> None:
    """Final (and best) accuracies of several runs (or every cell of sweep folders) side by side."""
    from rich.table import Table

    from fedsim.compare import grouped, label, run_table, system_totals, target_rows
    from fedsim.sweep import cell_runs, is_sweep

    runs = [r for p in runs for r in (cell_runs(p) if is_sweep(p) else [p])]

    if by_algorithm and target_accuracy is not None:
        raise UserError("--target-accuracy is shown per run; leave out --by-algorithm")

    keys, table_rows = run_table(runs)
    if out is not None:
        from fedsim.report import write_compare

        console.print(f"report: {write_compare(runs, out)}", highlight=False)
    if by_algorithm:
        stats = grouped(keys, table_rows)
        table = Table(title="final value, mean ± std over runs")
        table.add_column("metric", style="bold")
        for algo, per in stats.items():
            n = max((v[2] for v in per.values()), default=0)
            table.add_column(f"{algo} (n={n})", justify="right")
        for key in keys:
            cells = [
                f"{per[key][0]:.4f} ± {per[key][1]:.4f}" if key in per else "-" for per in stats.values()
            ]
            table.add_row(label(key), *cells)
        console.print(table)
        return
    table = Table(title="final (best)")
    table.add_column("metric", style="bold")
    for r in table_rows:
        table.add_column(f"{r['run']}\n{r['algorithm']}, {r['rounds']} rounds", justify="right")
    for key in keys:
        cells = [f"{r[key][0]:.4f} ({r[key][1]:.4f})" if key in r else "-" for r in table_rows]
        table.add_row(label(key), *cells)
    extra = system_totals(runs) + (target_rows(runs, target_accuracy) if target_accuracy is not None else [])
    for name, cells in extra:
        table.add_row(name, *cells)
    console.print(table)


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="Run folder (of any kind) or sweep folder.")],
) -> None:
    """(Re)build RUN/report.html and RUN/figures/ from a run (or sweep) folder."""
    from fedsim.report import write_report
    from fedsim.report.html import REPORT_FILE
    from fedsim.sweep import Sweep, is_sweep, write_results

    if not run.is_dir():
        raise UserError(f"{run}: no such run folder; expected a folder written by 'fedsim run'")
    if is_sweep(run):
        write_results(Sweep.open(run))
        console.print(f"report: {run.absolute() / REPORT_FILE}", highlight=False)
        return
    console.print(f"report: {write_report(run)}", highlight=False)


DEBUG_FLAG = "--debug"


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option(DEBUG_FLAG, help="Print the traceback of an error (anywhere on the line).")
    ] = False,
) -> None:
    """Federated learning and split-computing simulator."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point.

    Errors print one line: code 2 for the user's input (:class:`UserError`, bad usage),
    1 for a run that failed (:class:`RunFailed`) or anything unexpected; ``--debug``,
    anywhere on the command line, adds the traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args
    args = [a for a in args if a != DEBUG_FLAG]
    try:
        app(args=args, prog_name="fedsim", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):  # usage errors
            exc.show()
            sys.exit(2)
        if isinstance(exc, UserError | RunFailed):
            line = str(exc)
        else:
            line = f"unexpected {type(exc).__name__}: {exc}".splitlines()[0]
            line += "" if debug else f" (run again with {DEBUG_FLAG} for the traceback)"
        if debug:
            err_console.print_exception()
        err_console.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
        sys.exit(2 if isinstance(exc, UserError) else 1)


if __name__ == "__main__":
    main()
