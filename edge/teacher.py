"""The teacher: a torchvision-style checkpoint, or a ResNet trained here and cached.

A trained teacher is cached as ``cache_dir()/teachers/<key>.pt`` where the key hashes
everything that determines it (architecture, dataset and options, image size, seed,
training hyper-parameters), so a second experiment with the same teacher trains nothing.
Training is deterministic for a seed: the initial weights come from a forked RNG seeded
from the experiment seed, and each epoch's batch order from its own generator.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedsim.cache import cache_dir
from fedsim.config import OptimizerSpec
from fedsim.data import Dataset
from fedsim.edge.experiment import Experiment
from fedsim.edge.resnet import (
    ResNet,
    load_torchvision_checkpoint,
    resnet18,
    resnet50,
    resnet152,
    small_resnet,
)
from fedsim.errors import UserError
from fedsim.training import Stats, derive_seed, make_optimizer, train_epochs

_SALT_INIT = 0x7EAC
_SALT_EPOCH = 0x7EAD
CACHE_FORMAT = 1  # bump when training changes, so old cached teachers are not reused

EpochCallback = Callable[[int, Stats], Any]


@dataclass(frozen=True)
class TeacherInfo:
    """Where a teacher came from: ``source`` is ``checkpoint``, ``cache`` or ``trained``."""

    source: str
    path: str
    key: str | None = None


def stem_pool(exp: Experiment, image_size: int) -> bool:
    """Whether a small teacher's stem pools (explicit, or for images of 64 px and more)."""
    return exp.teacher.stem_pool if exp.teacher.stem_pool is not None else image_size >= 64


def build_teacher(exp: Experiment, num_classes: int, input_shape: tuple[int, int, int]) -> ResNet:
    """An untrained teacher of the experiment's architecture (global RNG initialises it).

    Raises
    ------
    UserError
        When an ImageNet architecture is asked for on images that are not RGB.
    """
    spec = exp.teacher
    channels, size, _ = input_shape
    if spec.arch == "small":
        return small_resnet(num_classes, channels, spec.width, spec.blocks, stem_pool(exp, size))
    if channels != 3:
        raise UserError(f"teacher.arch: {spec.arch} takes RGB images; the dataset has {channels} channel(s)")
    return {"resnet18": resnet18, "resnet50": resnet50, "resnet152": resnet152}[spec.arch](num_classes)


def teacher_key(exp: Experiment, data: Dataset) -> str:
    """A hash of everything that determines a trained teacher."""
    spec = exp.teacher
    parts = {
        "format": CACHE_FORMAT,
        "arch": spec.arch,
        "width": spec.width,
        "blocks": list(spec.blocks),
        "stem_pool": stem_pool(exp, data.input_shape[1]),
        "train": spec.train.model_dump(mode="json") if spec.train else None,
        "dataset": exp.data.dataset,
        "options": exp.data.options,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "seed": exp.seed,
    }
    text = json.dumps(parts, sort_keys=True)
    return f"{exp.teacher.arch}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def teacher_cache_file(exp: Experiment, data: Dataset) -> Path:
    """``cache_dir()/teachers/<key>.pt``."""
    return cache_dir() / "teachers" / f"{teacher_key(exp, data)}.pt"


def init_teacher(exp: Experiment, data: Dataset) -> ResNet:
    """The teacher with its seeded initial weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(exp.seed, _SALT_INIT))
        return build_teacher(exp, data.num_classes, data.input_shape)


def train_teacher(exp: Experiment, data: Dataset, on_epoch: EpochCallback | None = None) -> ResNet:
    """Train a teacher on the training split: SGD, cosine learning rate, one generator per epoch.

    Parameters
    ----------
    exp : Experiment
        ``teacher.train`` holds the hyper-parameters.
    data : Dataset
        The experiment's data.
    on_epoch : callable, optional
        Called as ``on_epoch(epoch, stats)`` after each epoch (``epoch`` counts from 0).

    Returns
    -------
    ResNet
        The trained teacher, in eval mode.
    """
    spec = exp.teacher.train
    if spec is None:
        raise ValueError("the experiment names a teacher checkpoint; nothing to train")
    model = init_teacher(exp, data)
    opt = make_optimizer(
        model.parameters(),
        OptimizerSpec(name="sgd", lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay),
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.epochs)
    for epoch in range(spec.epochs):
        gen = torch.Generator().manual_seed(derive_seed(exp.seed, _SALT_EPOCH, epoch))
        stats = train_epochs(
            model,
            data.x_train,
            data.y_train,
            epochs=1,
            batch_size=spec.batch_size,
            optimizer=opt,
            generator=gen,
        )
        schedule.step()
        if on_epoch is not None:
            on_epoch(epoch, stats)
    return model.eval()


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a torn file never replaces a good one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def obtain_teacher(
    exp: Experiment,
    data: Dataset,
    on_epoch: EpochCallback | None = None,
    on_train_start: Callable[[], Any] | None = None,
) -> tuple[ResNet, TeacherInfo]:
    """The experiment's teacher: loaded from its checkpoint or the cache, else trained and cached.

    Parameters
    ----------
    exp : Experiment
        The experiment.
    data : Dataset
        Its data (classes and input shape size the teacher).
    on_epoch : callable, optional
        Progress callback while training.
    on_train_start : callable, optional
        Called once before training starts (not when a teacher is loaded).

    Returns
    -------
    (ResNet, TeacherInfo)
        The teacher in eval mode, and where it came from.
    """
    if exp.teacher.path is not None:
        model = build_teacher(exp, data.num_classes, data.input_shape)
        load_torchvision_checkpoint(model, exp.teacher.path)
        return model.eval(), TeacherInfo("checkpoint", str(exp.teacher.path))
    file = teacher_cache_file(exp, data)
    key = file.stem
    if file.is_file():
        model = build_teacher(exp, data.num_classes, data.input_shape)
        model.load_state_dict(torch.load(file, weights_only=True))
        return model.eval(), TeacherInfo("cache", str(file), key)
    if on_train_start is not None:
        on_train_start()
    model = train_teacher(exp, data, on_epoch)
    save_atomic(model.state_dict(), file)
    return model, TeacherInfo("trained", str(file), key)
