"""Pretrained weights from local files: read, convert to fedsim's layout, check, load.

A model section may name ``pretrained: NAME_OR_PATH`` (with ``format`` and ``layout`` where
the suffix and the keys do not tell them). :func:`pretrained_state` reads the file
(:mod:`~fedsim.pretrained.readers`), renames its keys (:mod:`~fedsim.pretrained.layouts`),
fits them to the module (:mod:`~fedsim.pretrained.fit`) and keeps the result for the
process; :func:`load_pretrained` loads it into a module. Named checkpoints ship inside
pinned packages (:mod:`~fedsim.pretrained.catalog`, ``make pretrained``).
"""

from __future__ import annotations

from torch import nn

from fedsim.memo import Memo, memo
from fedsim.pretrained.catalog import CATALOG, Named, requirements, resolve
from fedsim.pretrained.fit import Fitted, fit_tensors, resize_positions
from fedsim.pretrained.layouts import LAYOUTS, Layout
from fedsim.pretrained.readers import READERS, format_of, read_tensors

__all__ = [
    "CATALOG",
    "LAYOUTS",
    "READERS",
    "Fitted",
    "Layout",
    "Named",
    "fit_tensors",
    "format_of",
    "load_pretrained",
    "pretrained_state",
    "read_tensors",
    "requirements",
    "resize_positions",
    "resolve",
    "start_from",
]

_FITTED: Memo[Fitted] = memo("pretrained.fitted", 8)


def pretrained_state(
    module: nn.Module, value: str, fmt: str | None = None, layout: str | None = None, key: object = None
) -> Fitted:
    """The checkpoint ``value`` (catalog name or path) fitted to ``module``.

    Parameters
    ----------
    module : nn.Module
        What the weights go into (its state dict gives the keys and shapes).
    value : str
        A name of :data:`CATALOG` or a file.
    fmt, layout : str, optional
        The file's format and key layout; inferred when None (a catalog entry gives its layout).
    key : object, optional
        What else the fitted state depends on (the architecture and input size), for the
        per-process memo; None: not memoised.
    """
    path = resolve(value)
    named = CATALOG.get(value)
    layout = layout or (named.layout if named is not None else None)
    if layout is not None:
        LAYOUTS.entry(layout)

    def build() -> Fitted:
        return fit_tensors(module, read_tensors(path, fmt), layout, repr(value))

    if key is None:
        return build()
    return _FITTED.get((str(path), fmt, layout, key), build)


def load_pretrained(
    module: nn.Module, value: str, fmt: str | None = None, layout: str | None = None, key: object = None
) -> Fitted:
    """Load the checkpoint ``value`` into ``module`` in place (see :func:`pretrained_state`)."""
    fitted = pretrained_state(module, value, fmt, layout, key)
    module.load_state_dict(fitted.state, strict=True)
    return fitted


def start_from(
    features: nn.Module,
    model: str,
    params: dict,
    input_shape: tuple[int, ...],
    value: str,
    fmt: str | None = None,
    layout: str | None = None,
) -> Fitted:
    """Load ``value`` into a scenario model's ``features`` (memoised by architecture and input)."""
    import json

    key = (model, json.dumps(params, sort_keys=True, default=str), tuple(input_shape))
    return load_pretrained(features, value, fmt, layout, key=key)
