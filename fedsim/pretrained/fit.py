"""Fitting a checkpoint's tensors into a fedsim module: layout, prefix, positions, checks.

:func:`fit_tensors` finds the layout and prefix under which the checkpoint fits the module
best, renames the tensors, interpolates a ViT's position table to the module's patch grid,
and checks every key and shape. A checkpoint that does not fit is one line naming the
first missing, unexpected or misshapen key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedsim.errors import UserError
from fedsim.pretrained.layouts import LAYOUTS
from fedsim.pretrained.readers import Tensors

#: Prefixes tried before the layout's names (besides those the checkpoint's keys suggest).
_COMMON_PREFIXES = ("", "module.", "model.", "backbone.", "vit.", "dinov2.", "bert.", "encoder.")


@dataclass(frozen=True)
class Fitted:
    """A checkpoint converted for one module.

    Attributes
    ----------
    state : dict
        The module's full state dict, filled from the checkpoint.
    layout, prefix : str
        The layout that fitted and the prefix its keys were found under.
    loaded : int
        Entries of the module's state dict that came from the checkpoint.
    resized : bool
        Whether the position table was interpolated to the module's grid.
    """

    state: dict[str, torch.Tensor]
    layout: str
    prefix: str
    loaded: int
    resized: bool


def _prefixes(keys: list[str]) -> list[str]:
    found = set(_COMMON_PREFIXES)
    for key in keys:
        parts = key.split(".")
        for i in range(1, min(3, len(parts))):
            found.add(".".join(parts[:i]) + ".")
    return sorted(found, key=len)


def _candidates(
    tensors: Tensors, target: set[str], layout: str | None
) -> list[tuple[int, str, str, Tensors]]:
    names = [layout] if layout is not None else LAYOUTS.names()
    out = []
    for name in names:
        entry = LAYOUTS.get(name)
        marker = re.compile(entry.marker)
        for prefix in _prefixes(list(tensors)):
            sub = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            sub.update({k: v for k, v in tensors.items() if k.startswith("onnx::")})  # anonymous: no prefix
            if not any(marker.fullmatch(k) for k in sub):
                continue
            renamed = entry.rename(sub)
            out.append((sum(k in target for k in renamed), name, prefix, renamed))
    return sorted(out, key=lambda c: (-c[0], len(c[2])))


def resize_positions(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A ``[1, 1 + s*s, D]`` position table (class token first) interpolated to ``grid``.

    Bicubic, ``align_corners=False``: what timm, DINOv2 and Hugging Face do for other
    input sizes, done once at load time instead of at every forward pass.
    """
    n, dim = table.shape[1] - 1, table.shape[2]
    side = math.isqrt(n)
    if side * side != n:
        raise UserError(f"the position table has {n} patch entries, not a square grid")
    patches = table[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2).float()
    patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
    return torch.cat([table[:, :1].float(), patches.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


def _grid(module: nn.Module, entries: int) -> tuple[int, int]:
    grid = getattr(module, "grid", None)
    if grid is not None:
        return (int(grid[0]), int(grid[1]))
    side = math.isqrt(entries)
    return (side, side)


def _first(items: list[str], what: str) -> str:
    more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
    return f"{what} {items[0]}{more}"


def fit_tensors(module: nn.Module, tensors: Tensors, layout: str | None, source: str) -> Fitted:
    """``tensors`` converted into ``module``'s state dict, or a one-line UserError.

    Parameters
    ----------
    module : nn.Module
        The module to fill (not changed here).
    tensors : dict
        The checkpoint's tensors, as read.
    layout : str or None
        A name of ``LAYOUTS``; None: the layout whose marker key is present and under which
        most keys fit.
    source : str
        How to name the checkpoint in messages.
    """
    own = module.state_dict()
    found = _candidates(tensors, set(own), layout)
    if not found:
        wanted = f"layout {layout!r}" if layout else "any known layout"
        raise UserError(
            f"pretrained {source}: its keys match {wanted} (first key {next(iter(tensors), '(none)')!r}); "
            f"expected one of the layouts {', '.join(LAYOUTS.names())} (set model.layout)"
        )
    _, name, prefix, renamed = found[0]
    resized = False
    if "pos_embed" in renamed and "pos_embed" in own and renamed["pos_embed"].shape != own["pos_embed"].shape:
        target = own["pos_embed"].shape[1] - 1
        renamed["pos_embed"] = resize_positions(renamed["pos_embed"], _grid(module, target))
        resized = True
    drop = re.compile(LAYOUTS.get(name).drop)
    where = f"pretrained {source} ({name} layout" + (f", under {prefix!r})" if prefix else ")")
    missing = [k for k in own if k not in renamed and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in renamed if k not in own and not drop.fullmatch(k)]
    if missing:
        raise UserError(f"{where} does not fit the model: {_first(missing, 'missing key')}")
    if unexpected:
        raise UserError(f"{where} does not fit the model: {_first(unexpected, 'unexpected key')}")
    wrong = [
        f"{k} {tuple(renamed[k].shape)} in the file, {tuple(v.shape)} in the model"
        for k, v in own.items()
        if k in renamed and renamed[k].shape != v.shape
    ]
    if wrong:
        raise UserError(f"{where} does not fit the model: {_first(wrong, 'misshapen key')}")
    state = {k: renamed[k].to(v.dtype) if k in renamed else v for k, v in own.items()}
    return Fitted(state, name, prefix, sum(k in renamed for k in own), resized)
