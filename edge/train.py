"""Running an edge experiment: teacher, then both stages for every C, in a resumable run folder.

Layout (plain files, like the FL runs)::

    RUN/
      experiment.yaml            the resolved experiment (every default filled in)
      results.jsonl              one line per C and stage: accuracies, losses, payload
      summary.json               status, steps done, teacher, final row per C, versions
      checkpoints/teacher.pt     the teacher's state dict (the run does not need the cache)
      checkpoints/C{c}-stage{n}.pt         the student after stage n (state dict + its row)
      checkpoints/C{c}-stage{n}-epoch.pt   the latest epoch of a stage in progress

A step is one (C, stage). ``--resume RUN`` skips finished steps, continues a step from its
latest epoch, and gives the same weights as an uninterrupted run: the student's initial
weights come from a seed per C and each epoch's batch order from a seed per epoch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from fedsim.config import Experiment
from fedsim.data import Dataset
from fedsim.edge.bottlefit import SplitClassifier
from fedsim.edge.evaluate import split_accuracy
from fedsim.edge.experiment import experiment_data
from fedsim.edge.resnet import ResNet
from fedsim.edge.runfolder import (
    EXPERIMENT_FILE,
    RESULTS_FILE,
    EdgeRun,
    load_student,
    load_teacher,
    new_student,
)
from fedsim.edge.stages import Stage, TeacherOutputs, run_stage, setup_stage
from fedsim.edge.teacher import TeacherInfo, build_teacher, obtain_teacher, save_atomic
from fedsim.edge.train_progress import TrainProgress
from fedsim.loader import load_experiment
from fedsim.runstore import new_run_dir
from fedsim.training import Stats, evaluate

# ----------------------------------------------------------------------------- training


def _versions() -> dict[str, str]:
    import fedsim

    return {"fedsim": fedsim.__version__, "torch": torch.__version__}


def _teacher_accuracy(teacher: ResNet, data: Dataset) -> float:
    return evaluate(teacher, data.x_test, data.y_test).accuracy


def _step_row(
    exp: Experiment,
    stage: Stage,
    student: SplitClassifier,
    data: Dataset,
    teacher_acc: float,
    last: Stats,
    elapsed: float,
) -> dict[str, Any]:
    test = evaluate(student, data.x_test, data.y_test)
    coded = split_accuracy(student, exp.codec, data.x_test, data.y_test)
    return {
        "C": student.bottleneck_channels,
        "stage": stage.number,
        "mode": stage.name,
        "epochs": stage.epochs,
        "train_loss": last.loss,
        "train_accuracy": last.accuracy,
        "test_loss": test.loss,
        "accuracy": test.accuracy,
        "codec": exp.codec,
        "codec_accuracy": coded["accuracy"],
        "payload_bytes": coded["payload_bytes"],
        "bottleneck_shape": coded["bottleneck_shape"],
        "teacher_accuracy": teacher_acc,
        "accuracy_loss_points": 100.0 * (teacher_acc - coded["accuracy"]),
        "elapsed_s": elapsed,
    }


def _train_step(
    folder: EdgeRun,
    exp: Experiment,
    data: Dataset,
    teacher: TeacherOutputs,
    student: SplitClassifier,
    number: int,
    teacher_acc: float,
    progress: TrainProgress,
) -> dict[str, Any]:
    """Run (or continue) one stage for one C; write its checkpoints and return its row."""
    c = student.bottleneck_channels
    stage = setup_stage(number, student, teacher, exp)
    partial = folder.epoch_path(c, number)
    start, elapsed, last = 0, 0.0, Stats(float("nan"), float("nan"), 0)
    if partial.is_file():
        state = torch.load(partial, weights_only=True)
        student.load_state_dict(state["model"])
        stage.optimizer.load_state_dict(state["optimizer"])
        start, elapsed = state["epoch"] + 1, state["elapsed_s"]
        last = Stats(*state["last"])
    progress.start(f"C={c} stage {number} ({stage.name})", stage.epochs, start)
    t0 = time.perf_counter()

    def on_epoch(epoch: int, stats: Stats) -> None:
        nonlocal last
        last = stats
        progress.epoch(epoch, stats)
        if epoch + 1 < stage.epochs:
            state = {
                "epoch": epoch,
                "model": student.state_dict(),
                "optimizer": stage.optimizer.state_dict(),
                "elapsed_s": elapsed + time.perf_counter() - t0,
                "last": [stats.loss, stats.accuracy, stats.num_examples],
            }
            save_atomic(state, partial)

    run_stage(stage, data.x_train, data.y_train, exp.seed, c, start, on_epoch)
    student.eval()
    row = _step_row(exp, stage, student, data, teacher_acc, last, elapsed + time.perf_counter() - t0)
    save_atomic({"model": student.state_dict(), "row": row}, folder.stage_path(c, number))
    partial.unlink(missing_ok=True)
    folder.append(RESULTS_FILE, [row])
    progress.line(
        f"C={c} stage {number} ({stage.name}): accuracy {row['accuracy']:.4f}, with {exp.codec} "
        f"{row['codec_accuracy']:.4f} ({row['accuracy_loss_points']:+.2f} points vs teacher), "
        f"payload {row['payload_bytes']:.0f} B"
    )
    return row


def _restore_rows(folder: EdgeRun, exp: Experiment) -> None:
    """Make results.jsonl hold exactly the finished steps' rows, in step order."""
    rows = []
    for c in exp.bottleneck_channels:
        for n in exp.stages():
            file = folder.stage_path(c, n)
            if file.is_file():
                rows.append(torch.load(file, weights_only=True)["row"])
    if rows != folder.results():
        folder.rewrite_results(rows)


def summarise(folder: EdgeRun, exp: Experiment, status: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Build and write summary.json from the rows written so far."""
    rows = folder.results()
    final: dict[str, Any] = {}
    for row in rows:
        final[str(row["C"])] = row  # later stages overwrite earlier ones
    summary = {
        "name": exp.name,
        "status": status,
        "steps_planned": len(exp.bottleneck_channels) * len(exp.stages()),
        "steps_completed": len(rows),
        "final": final,
        "elapsed_s": sum(r.get("elapsed_s", 0.0) for r in rows),
        "versions": _versions(),
        **extra,
    }
    folder.write_summary(summary)
    return summary


def _teacher_for_run(
    folder: EdgeRun, exp: Experiment, data: Dataset, progress: TrainProgress
) -> tuple[ResNet, dict[str, Any]]:
    old = folder.summary().get("teacher")
    if folder.teacher_path().is_file() and old:
        return load_teacher(folder, exp, data), old
    teacher, info = _obtain(exp, data, progress)
    save_atomic(teacher.state_dict(), folder.teacher_path())
    return teacher, _teacher_summary(teacher, info, data)


def _obtain(exp: Experiment, data: Dataset, progress: TrainProgress) -> tuple[ResNet, TeacherInfo]:
    def started() -> None:
        epochs = exp.teacher.train.epochs if exp.teacher.train else 0
        progress.line(f"training the {exp.teacher.arch} teacher on {data!r} for {epochs} epochs")
        progress.start("teacher", epochs)

    teacher, info = obtain_teacher(exp, data, progress.epoch, started)
    return teacher, info


def _teacher_summary(teacher: ResNet, info: TeacherInfo, data: Dataset) -> dict[str, Any]:
    return {
        "source": info.source,
        "path": info.path,
        "key": info.key,
        "accuracy": _teacher_accuracy(teacher, data),
        "parameters": sum(p.numel() for p in teacher.parameters()),
    }


def execute(
    folder: EdgeRun,
    exp: Experiment,
    data: Dataset,
    progress: TrainProgress,
    stop_after: int | None = None,
    teacher_state: tuple[ResNet, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train every unfinished step of a run folder; write results and the summary.

    Parameters
    ----------
    folder : EdgeRun
        The run folder (created, possibly partly done).
    exp : Experiment
        Its experiment.
    data : Dataset
        Its data.
    progress : TrainProgress
        Bars and log lines.
    stop_after : int, optional
        Stop (status ``stopped``, resumable) after this many steps in this call.
    teacher_state : (teacher, summary), optional
        A teacher already obtained (else the run's copy, or :func:`obtain_teacher`).

    Returns
    -------
    dict
        The summary written to summary.json.
    """
    _restore_rows(folder, exp)
    if teacher_state is None:
        teacher_state = _teacher_for_run(folder, exp, data, progress)
    teacher, teacher_info = teacher_state
    extra = {"teacher": teacher_info}
    teacher_acc = float(teacher_info["accuracy"])
    size = data.input_shape[1]
    summary = summarise(folder, exp, "running", extra)
    outputs: TeacherOutputs | None = None  # computed when the first step needs them
    status, done = "failed", 0
    try:
        for c in exp.bottleneck_channels:
            last = folder.last_stage(exp, c)
            todo = [n for n in exp.stages() if last is None or n > last]
            if not todo:
                continue
            if last is None:
                student = new_student(exp, teacher, c, size)
            else:
                student = load_student(folder, exp, teacher, c, size)[0]
            for number in todo:
                if stop_after is not None and done >= stop_after:
                    status = "stopped"
                    return summarise(folder, exp, status, extra)
                if outputs is None:
                    outputs = TeacherOutputs(teacher, data.x_train, exp.split)
                _train_step(folder, exp, data, outputs, student, number, teacher_acc, progress)
                done += 1
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if status != "stopped":
            summary = summarise(folder, exp, status, extra)
    return summary


def start_training(
    path: Path, overrides: list[str], progress: TrainProgress, stop_after: int | None = None
) -> tuple[EdgeRun, dict[str, Any]]:
    """Validate everything and obtain the teacher, then create a new run folder and train.

    Errors in the file, the data or the teacher checkpoint surface before anything is
    written (a trained teacher goes to the cache only).
    """
    exp = load_experiment(path, overrides)
    data = experiment_data(exp)
    with torch.random.fork_rng(devices=[]):  # the architecture and split fit the data
        new_student(exp, build_teacher(exp, data.num_classes, data.input_shape), 1, data.input_shape[1])
    teacher, info = _obtain(exp, data, progress)
    folder = EdgeRun(new_run_dir(exp))
    folder.create(exp)
    save_atomic(teacher.state_dict(), folder.teacher_path())
    state = (teacher, _teacher_summary(teacher, info, data))
    progress.line(
        f"teacher ({info.source}, {state[1]['parameters']:,} parameters): "
        f"test accuracy {state[1]['accuracy']:.4f}; run folder {folder.path}"
    )
    return folder, execute(folder, exp, data, progress, stop_after, state)


def resume_training(
    path: Path, progress: TrainProgress, stop_after: int | None = None
) -> tuple[EdgeRun, dict[str, Any]]:
    """Continue an edge run from its checkpoints (a completed run is left as it is)."""
    folder = EdgeRun(path)
    exp = folder.experiment()
    summary = folder.summary()
    if summary.get("status") == "completed":
        return folder, summary
    data = experiment_data(exp)
    return folder, execute(folder, exp, data, progress, stop_after)


__all__ = [
    "EXPERIMENT_FILE",
    "RESULTS_FILE",
    "EdgeRun",
    "TrainProgress",
    "execute",
    "load_student",
    "load_teacher",
    "new_student",
    "resume_training",
    "start_training",
]
