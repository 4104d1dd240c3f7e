"""The schema of a BottleFit experiment (``kind: bottlefit``; ``fedsim edge train``).

An experiment names a dataset, a teacher (a checkpoint on disk, or one trained here and
cached), the split point, the bottleneck widths C to try, the two training stages and
the codec that carries the bottleneck. Every problem is one line ``FILE: key.path: what
was expected`` (:class:`~fedsim.errors.ConfigError`, exit code 2 on the command line).

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

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from fedsim.config.base import NAME_PATTERN, Document, Strict
from fedsim.config.common import DatasetSpec, OutputSpec


class ImageDataSpec(DatasetSpec):
    """The dataset, its loader options, and an optional resize of every image."""

    dataset: str = "shapes"
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
            raise ValueError(
                f"checkpoint {str(self.path)!r} does not exist; "
                "expected a checkpoint file (.pt, .pth, .safetensors or .onnx)"
            )
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


class Experiment(Document):
    """One BottleFit experiment: a teacher, a split point, several bottleneck widths."""

    kind: Literal["bottlefit"] = Field("bottlefit", description="the kind of file: a BottleFit experiment")
    name: str = Field(pattern=NAME_PATTERN)
    seed: int = Field(0, ge=0)
    data: ImageDataSpec = ImageDataSpec()
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
