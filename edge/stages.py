"""BottleFit's two training stages (docs/algorithms/bottlefit.md), one epoch at a time.

1. Generalised head network distillation (GHND): only the encoder and decoder learn; the
   kept stages are frozen (no gradient step, batch-norm statistics untouched) but
   gradients flow through them. Loss: sum of MSE between student and teacher at the
   replaced boundary and after every later stage. Adam.
2. Fine-tuning: the encoder is frozen, the decoder and kept stages learn with
   cross-entropy (``ft``) or ``0.5 CE + 0.5 T^2 KL(teacher || student)`` (``kd``). SGD.

Frozen modules stay in eval mode while the rest trains, so they come out bit-identical.
The teacher's outputs on the training images are computed once (:class:`TeacherOutputs`)
and shared by every C and epoch. Batches come from :func:`fedsim.training.train_epochs`
with one generator per epoch, seeded from ``(seed, C, stage, epoch)``, so an epoch's result
does not depend on whether the run was resumed before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from fedsim.edge.bottlefit import SplitClassifier, teacher_stages
from fedsim.edge.experiment import Experiment
from fedsim.edge.resnet import ResNet
from fedsim.training import Stats, derive_seed, train_epochs

_SALT_STAGE = 0xB0771E


class StageView(nn.Module):
    """The student as one stage trains it: ``train()`` keeps the frozen parts in eval mode.

    Parameters
    ----------
    student : SplitClassifier
        The split model being trained.
    frozen : list of nn.Module
        Parts of ``student`` that must not change (no gradients, eval-mode batch norm).
    """

    def __init__(self, student: SplitClassifier, frozen: list[nn.Module]) -> None:
        super().__init__()
        self.student = student
        self._frozen = list(frozen)  # a plain list: not registered twice
        for module in self._frozen:
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> StageView:
        """Set train/eval mode, leaving the frozen parts in eval mode."""
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def trainable(self) -> Iterator[nn.Parameter]:
        """Parameters that the stage updates."""
        return (p for p in self.student.parameters() if p.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The student's logits."""
        return self.student(x)


StageLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``loss(view, x_batch, y_batch, indices) -> (loss, logits)``; ``indices`` locate the batch in
the training set (for precomputed teacher outputs)."""


class TeacherOutputs:
    """The teacher's outputs at the split and after every later stage, for the training images.

    They do not change during distillation (the teacher is frozen and in eval mode), so they
    are computed once and shared by every C and epoch when they fit in ``budget_bytes``;
    otherwise each batch runs the teacher again.

    Parameters
    ----------
    teacher : ResNet
        The teacher, in eval mode.
    x : torch.Tensor
        The training images (the ``x`` later given to :func:`run_epoch`).
    split : str
        The split point (see :func:`fedsim.edge.bottlefit.teacher_stages`).
    budget_bytes : int
        Largest size to keep in memory.
    batch_size : int
        Batch size of the precomputation.
    """

    def __init__(
        self,
        teacher: ResNet,
        x: torch.Tensor,
        split: str,
        budget_bytes: int = 1 << 30,
        batch_size: int = 256,
    ) -> None:
        self.teacher, self.x, self.split = teacher, x, split
        self.cached: list[torch.Tensor] | None = None
        teacher.eval()
        with torch.no_grad():
            per_sample = sum(t[0].numel() for t in teacher_stages(teacher, x[:1], split)) * 4
            if per_sample * len(x) <= budget_bytes:
                parts = [
                    teacher_stages(teacher, x[i : i + batch_size], split)
                    for i in range(0, len(x), batch_size)
                ]
                self.cached = [torch.cat(p) for p in zip(*parts, strict=True)]

    def stages(self, x: torch.Tensor, idx: torch.Tensor) -> list[torch.Tensor]:
        """Outputs at every boundary for the images ``x`` (= ``self.x[idx]``)."""
        if self.cached is not None:
            return [t[idx] for t in self.cached]
        with torch.no_grad():
            return teacher_stages(self.teacher, x, self.split)

    def logits(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for the images ``x`` (= ``self.x[idx]``)."""
        if self.cached is not None:
            return self.cached[-1][idx]
        with torch.no_grad():
            return self.teacher(x)


def ghnd_loss(teacher: TeacherOutputs) -> StageLoss:
    """Stage-1 loss: sum over boundaries of MSE(student, teacher); returns (loss, logits)."""

    def loss_fn(
        view: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        targets = teacher.stages(x, idx)
        outputs = cast(StageView, view).student.forward_stages(x)
        loss = sum(
            (nn.functional.mse_loss(s, t) for s, t in zip(outputs, targets, strict=True)),
            start=torch.zeros(()),
        )
        return loss, outputs[-1]

    return loss_fn


def kd_loss(teacher: TeacherOutputs, temperature: float = 1.0) -> StageLoss:
    """Stage-2 KD loss: 0.5 CE + 0.5 T^2 KL(softmax(t/T) || softmax(s/T)); returns (loss, logits)."""

    def loss_fn(
        view: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t_logits = teacher.logits(x, idx)
        logits = view(x)
        ce = nn.functional.cross_entropy(logits, y)
        kl = nn.functional.kl_div(
            nn.functional.log_softmax(logits / temperature, dim=1),
            nn.functional.log_softmax(t_logits / temperature, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        return 0.5 * ce + 0.5 * temperature**2 * kl, logits

    return loss_fn


def ce_loss(
    view: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage-2 FT loss: cross-entropy; returns (loss, logits)."""
    logits = view(x)
    return nn.functional.cross_entropy(logits, y), logits


@dataclass
class Stage:
    """One stage set up for training.

    ``name`` is ``ghnd`` for stage 1, else the stage-2 mode (``ft`` or ``kd``).
    """

    number: int
    name: str
    view: StageView
    optimizer: torch.optim.Optimizer
    loss_fn: StageLoss
    epochs: int
    batch_size: int


def setup_stage(number: int, student: SplitClassifier, teacher: TeacherOutputs, exp: Experiment) -> Stage:
    """Freeze what stage ``number`` freezes and build its optimiser and loss.

    Parameters
    ----------
    number : int
        1 (GHND: encoder + decoder learn) or 2 (fine-tuning: encoder frozen).
    student : SplitClassifier
        The split model (changed in place by training).
    teacher : TeacherOutputs
        The unmodified teacher's outputs on the training images.
    exp : Experiment
        Epochs, learning rates and the stage-2 mode.

    Returns
    -------
    Stage
        Ready for :func:`run_epoch`.
    """
    teacher.teacher.eval().requires_grad_(False)
    student.requires_grad_(True)
    if number == 1:
        view = StageView(student, [student.kept])
        params = list(view.trainable())
        spec1 = exp.stage1
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=spec1.lr)
        return Stage(1, "ghnd", view, opt, ghnd_loss(teacher), spec1.epochs, spec1.batch_size)
    if number == 2:
        spec2 = exp.stage2
        view = StageView(student, [student.encoder])
        opt = torch.optim.SGD(
            list(view.trainable()), lr=spec2.lr, momentum=spec2.momentum, weight_decay=spec2.weight_decay
        )
        loss = kd_loss(teacher, spec2.temperature) if spec2.mode == "kd" else ce_loss
        return Stage(2, spec2.mode, view, opt, loss, spec2.epochs, spec2.batch_size)
    raise ValueError(f"stage must be 1 or 2, got {number}")


def epoch_generator(seed: int, channels: int, stage: int, epoch: int) -> torch.Generator:
    """The batch-order generator of one epoch of one stage for one C."""
    return torch.Generator().manual_seed(derive_seed(seed, _SALT_STAGE, channels, stage, epoch))


def run_epoch(stage: Stage, x: torch.Tensor, y: torch.Tensor, seed: int, channels: int, epoch: int) -> Stats:
    """Train one epoch of ``stage`` (``epoch`` counts from 0); the epoch's mean loss/accuracy.

    ``x`` must be the images the stage's :class:`TeacherOutputs` were made for. Batches are
    drawn by :func:`fedsim.training.train_epochs` over sample indices, so that the loss can
    look up the teacher's outputs for each batch.
    """

    def loss_fn(view: nn.Module, idx: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return stage.loss_fn(view, x[idx], yb, idx)

    return train_epochs(
        stage.view,
        torch.arange(len(y)),
        y,
        epochs=1,
        batch_size=stage.batch_size,
        optimizer=stage.optimizer,
        generator=epoch_generator(seed, channels, stage.number, epoch),
        loss_fn=loss_fn,
    )


def run_stage(
    stage: Stage,
    x: torch.Tensor,
    y: torch.Tensor,
    seed: int,
    channels: int,
    start_epoch: int = 0,
    on_epoch: Callable[[int, Stats], Any] | None = None,
) -> list[Stats]:
    """Train epochs ``start_epoch..epochs-1``, calling ``on_epoch(epoch, stats)`` after each."""
    history = []
    for epoch in range(start_epoch, stage.epochs):
        stats = run_epoch(stage, x, y, seed, channels, epoch)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(epoch, stats)
    return history
