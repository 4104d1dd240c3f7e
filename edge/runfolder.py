"""An edge run folder (:class:`EdgeRun`) and the models stored in it: the teacher and each C's student.

Used by training, evaluation and export alike, so none of them imports another for it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from fedsim.config import Experiment, read_yaml
from fedsim.data import Dataset
from fedsim.edge.bottlefit import SplitClassifier, inject_bottleneck
from fedsim.edge.resnet import ResNet
from fedsim.edge.teacher import build_teacher
from fedsim.errors import UserError
from fedsim.loader import validate
from fedsim.runstore import CHECKPOINT_DIR, RunFolder
from fedsim.training import derive_seed

EXPERIMENT_FILE = "experiment.yaml"
RESULTS_FILE = "results.jsonl"
TEACHER_FILE = "teacher.pt"
_SALT_INJECT = 0xB077

# --------------------------------------------------------------------------- run folder


class EdgeRun(RunFolder):
    """An edge run folder: :class:`~fedsim.runstore.RunFolder` with an experiment inside."""

    def create(self, exp: Experiment) -> None:  # type: ignore[override]  # an experiment, not a scenario
        """Make the folder and write the resolved experiment."""
        self.path.mkdir(parents=True, exist_ok=False)
        (self.path / CHECKPOINT_DIR).mkdir()
        (self.path / EXPERIMENT_FILE).write_text(exp.to_yaml())

    def experiment(self) -> Experiment:
        """The resolved experiment stored in the folder."""
        file = self.path / EXPERIMENT_FILE
        if not self.path.is_dir():
            raise UserError(
                f"{self.path}: no such run folder; expected a folder written by 'fedsim edge train'"
            )
        if not file.is_file():
            raise UserError(f"{self.path}: not an edge run folder; expected it to contain {EXPERIMENT_FILE}")
        raw = {"kind": "bottlefit", **read_yaml(file)}  # folders written before kind: existed
        return validate(raw, str(file), stored=True)  # type: ignore[return-value]  # kind bottlefit

    def scenario(self) -> Any:  # an edge run has no FL scenario
        """Not available: an edge run holds an experiment (see :meth:`experiment`)."""
        raise UserError(f"{self.path}: an edge run folder; use 'fedsim edge' commands on it")

    def teacher_path(self) -> Path:
        """The run's copy of the teacher."""
        return self.path / CHECKPOINT_DIR / TEACHER_FILE

    def stage_path(self, channels: int, stage: int) -> Path:
        """The checkpoint written when a stage finishes."""
        return self.path / CHECKPOINT_DIR / f"C{channels}-stage{stage}.pt"

    def epoch_path(self, channels: int, stage: int) -> Path:
        """The checkpoint of the latest epoch of a stage still in progress."""
        return self.path / CHECKPOINT_DIR / f"C{channels}-stage{stage}-epoch.pt"

    def results(self) -> list[dict[str, Any]]:
        """Rows of results.jsonl."""
        return self.read(RESULTS_FILE)

    def last_stage(self, exp: Experiment, channels: int) -> int | None:
        """The latest finished stage for C (None when none has finished)."""
        done = [n for n in exp.stages() if self.stage_path(channels, n).is_file()]
        return done[-1] if done else None

    def rewrite_results(self, rows: list[dict[str, Any]]) -> None:
        """Replace results.jsonl atomically."""
        tmp = self.path / f".{RESULTS_FILE}.tmp"
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        os.replace(tmp, self.path / RESULTS_FILE)


def load_teacher(folder: EdgeRun, exp: Experiment, data: Dataset) -> ResNet:
    """The run's teacher (from its own copy), in eval mode."""
    file = folder.teacher_path()
    if not file.is_file():
        raise UserError(f"{folder.path}: the run has no teacher yet ({file} is missing)")
    model = build_teacher(exp, data.num_classes, data.input_shape)
    model.load_state_dict(torch.load(file, weights_only=True))
    return model.eval()


def new_student(exp: Experiment, teacher: ResNet, channels: int, image_size: int) -> SplitClassifier:
    """The student for C with its seeded initial encoder and decoder (kept stages: teacher's)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(exp.seed, _SALT_INJECT, channels))
        return inject_bottleneck(teacher, split=exp.split, channels=channels, input_size=image_size)


def load_student(
    folder: EdgeRun, exp: Experiment, teacher: ResNet, channels: int, image_size: int
) -> tuple[SplitClassifier, int]:
    """The student for C after its latest finished stage, and that stage's number."""
    stage = folder.last_stage(exp, channels)
    if stage is None:
        raise UserError(f"{folder.path}: no finished stage for C={channels}; train (or --resume) first")
    student = new_student(exp, teacher, channels, image_size)
    student.load_state_dict(torch.load(folder.stage_path(channels, stage), weights_only=True)["model"])
    return student.eval(), stage


# ----------------------------------------------------------------------------- progress
