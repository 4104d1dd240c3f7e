"""Edge experiment files: the pydantic schema of a BottleFit run, loading and ``--set``.

An experiment names a dataset, a teacher (a checkpoint on disk, or one trained here and
cached), the split point, the bottleneck widths C to try, the two training stages and
the codec that carries the bottleneck. Validation reuses the scenario machinery of the
FL side, so every problem is one line ``FILE: key.path: what was expected`` raised as
:class:`~fedsim.scenario.ScenarioError` (exit code 2 on the command line).

Example
-------
.. code-block:: yaml

    kind: bottlefit
    name: bottlefit_shapes
    seed: 0
    data: {dataset: shapes, options: {image_size: 64, num_train: 3000, num_test: 1000}}
    teacher: {arch: small, width: 16, train: {epochs: 8, lr: 0.05}}
    split: layer2
    bottleneck_channels: [1, 2, 4, 8]
    stage1: {epochs: 6, lr: 1.0e-3}
    stage2: {epochs: 3, lr: 1.0e-3, mode: kd}
    codec: quant8
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from fedsim.data import Dataset, load_dataset
from fedsim.scenario import Document, ScenarioError, Strict, format_validation_error, read_with_overrides


class DataSpec(Strict):
    """The dataset, its loader options, and an optional resize of every image."""

    dataset: str = "shapes"
    options: dict[str, Any] = Field(default_factory=dict)
    image_size: int | None = Field(
        None, ge=8, le=512, description="resize images to this side (bilinear); None keeps the loader's"
    )


class TeacherTrainSpec(Strict):
    """How a teacher is trained when no checkpoint is given (SGD, cosine schedule)."""

    epochs: int = Field(8, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    batch_size: int = Field(64, ge=1)


class TeacherSpec(Strict):
    """The unmodified model the student is distilled from.

    ``path`` names a torchvision-style state dict for ``arch`` (its ``fc`` sized to the
    dataset's classes); without it the teacher is trained on the dataset and cached.
    """

    arch: Literal["small", "resnet18", "resnet50", "resnet152"] = "small"
    width: int = Field(16, ge=4, le=256, description="small only: channels of layer1")
    blocks: tuple[int, int, int, int] = Field((1, 1, 1, 1), description="small only: blocks per stage")
    stem_pool: bool | None = Field(
        None, description="small only: max-pool in the stem; None: when images are 64 px or larger"
    )
    path: Path | None = Field(None, description="torchvision-style checkpoint; None: train one")
    train: TeacherTrainSpec | None = Field(None, description="defaults apply when there is no path")

    @field_validator("blocks")
    @classmethod
    def _positive_blocks(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(b < 1 for b in v):
            raise ValueError(f"every stage needs at least one block, got {list(v)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _default_train(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("path") is None and data.get("train") is None:
            data = {**data, "train": {}}
        return data

    @model_validator(mode="after")
    def _path_or_train(self, info: ValidationInfo) -> TeacherSpec:
        if self.path is not None and self.train is not None:
            raise ValueError("give either path (a checkpoint) or train (train one here), not both")
        stored = bool(info.context and info.context.get("stored"))
        if self.path is not None and not stored and not self.path.is_file():
            raise ValueError(f"checkpoint {str(self.path)!r} does not exist; expected a .pt/.pth file")
        return self


class Stage1Spec(Strict):
    """Generalised head network distillation: encoder + decoder, Adam."""

    epochs: int = Field(5, ge=0, description="0 skips the stage")
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1)


class Stage2Spec(Strict):
    """Fine-tuning with the encoder frozen: cross-entropy (ft) or distillation (kd), SGD."""

    epochs: int = Field(3, ge=0, description="0 skips the stage")
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    batch_size: int = Field(32, ge=1)
    mode: Literal["ft", "kd"] = "kd"
    temperature: float = Field(1.0, gt=0, description="kd only")


class OutputSpec(Strict):
    """Where run folders go."""

    dir: Path = Path("runs")


class Experiment(Document):
    """One BottleFit experiment: a teacher, a split point, several bottleneck widths."""

    kind: Literal["bottlefit"] = Field("bottlefit", description="the kind of file: a BottleFit experiment")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, ge=0)
    data: DataSpec = DataSpec()
    teacher: TeacherSpec = TeacherSpec()
    split: Literal["layer1", "layer2", "layer3", "layer4"] = "layer2"
    bottleneck_channels: list[int] = Field([1, 2, 4, 8], min_length=1)
    stage1: Stage1Spec = Stage1Spec()
    stage2: Stage2Spec = Stage2Spec()
    codec: Literal["quant8", "fp16", "none"] = "quant8"
    output: OutputSpec = OutputSpec()

    @field_validator("bottleneck_channels")
    @classmethod
    def _channels(cls, v: list[int]) -> list[int]:
        if any(c < 1 or c > 512 for c in v):
            raise ValueError(f"every C must be in 1..512, got {v}")
        if len(set(v)) != len(v):
            raise ValueError(f"C values must be distinct, got {v}")
        return v

    @model_validator(mode="after")
    def _some_stage(self) -> Experiment:
        if not self.stages():
            raise ValueError("stage1.epochs and stage2.epochs are both 0; expected at least one stage to run")
        return self

    def stages(self) -> list[int]:
        """The stages that run (those with at least one epoch)."""
        return [n for n, spec in ((1, self.stage1), (2, self.stage2)) if spec.epochs > 0]


def _check_dataset(exp: Experiment, source: str) -> None:
    from fedsim.components import _check
    from fedsim.data import DATASETS

    _check(DATASETS, exp.data.dataset, exp.data.options, source, "data.options", "data.dataset")


def validate_experiment(raw: dict[str, Any], source: str, stored: bool = False) -> Experiment:
    """Validate a raw mapping: structure, then the dataset's options.

    Parameters
    ----------
    raw : dict
        The parsed YAML (overrides applied).
    source : str
        What the messages name (the file, plus any ``--set``).
    stored : bool
        True for the resolved copy in a run folder: the teacher checkpoint it names need
        not exist any more (the run keeps its own copy).

    Returns
    -------
    Experiment
        The validated experiment.

    Raises
    ------
    ScenarioError
        One line per problem: ``SOURCE: key.path: expected ...``.
    """
    try:
        exp = Experiment.model_validate(raw, context={"stored": stored})
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(exc, source, Experiment)) from None
    _check_dataset(exp, source)
    return exp


def load_experiment(path: Path | str, overrides: list[str] | None = None) -> Experiment:
    """Load, override (``key.path=value``) and validate an experiment file."""
    return validate_experiment(*read_with_overrides(path, overrides))


# ------------------------------------------------------------------------------- data


def experiment_data(exp: Experiment) -> Dataset:
    """The experiment's dataset, resized to ``data.image_size`` when that is set."""
    return spec_data(exp.data, exp.seed)


def spec_data(spec: DataSpec, seed: int) -> Dataset:
    """The dataset a :class:`DataSpec` names, resized to ``spec.image_size`` when that is set.

    Resizing is bilinear (antialiased when shrinking) on the normalised images; since
    the normalisation is affine per channel, ``mean`` and ``std`` still undo it.
    """
    data = load_dataset(spec.dataset, spec.options, seed)
    size = spec.image_size
    if size is None or data.input_shape[1:] == (size, size):
        return data

    def resize(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1]
        ).contiguous()

    return dataclasses.replace(data, x_train=resize(data.x_train), x_test=resize(data.x_test))


def raw_uint8(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Undo the normalisation: uint8 images ``[N, H, W, C]`` (what a camera would hand over).

    Parameters
    ----------
    x : torch.Tensor
        Normalised images ``[N, C, H, W]`` (or one image ``[C, H, W]``).
    mean, std : tuple of float
        The dataset's per-channel statistics.

    Returns
    -------
    np.ndarray
        ``round(clamp(x * std + mean, 0, 1) * 255)`` as uint8, channels last.
    """
    batch = x.unsqueeze(0) if x.dim() == 3 else x
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    raw = ((batch * s + m).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    out = raw.contiguous().numpy()
    return out[0] if x.dim() == 3 else out
