"""Feature-shift clients: one image style per client over the same dataset.

The ``domains`` partitioner splits the training samples uniformly at random (as
``iid``) and gives client k the style ``styles[k mod S]``; the style is a transform of
the client's images (training and local test alike), so it composes with any dataset.
Styles (registered in ``STYLES``), on raw pixels r in [0, 1]:

- ``original``: r unchanged;
- ``inverted``: 1 - r;
- ``rotated``: r turned by 90 degrees (180 for non-square images);
- ``noisy``: r + N(0, noise_std^2), noise drawn from (seed, client, split).

Images are stored normalised, x = (r - mean) / std per channel, so each transform is
applied in that space: inverted is x' = (1 - 2 mean) / std - x, noise is eps / std.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator

from fedsim.config import NoParams, Params
from fedsim.data.partition import PARTITIONERS, iid
from fedsim.registry import Registry

SALT_NOISE = 0xD0A1


@dataclass(frozen=True)
class StyleContext:
    """What a style transform may use besides the images."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    noise_std: float
    generator: torch.Generator


StyleFn = Callable[[torch.Tensor, StyleContext], torch.Tensor]
STYLES: Registry[StyleFn] = Registry("domain style")


def _per_channel(values: tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=x.dtype).reshape(1, -1, 1, 1)


@STYLES.register("original", summary="images unchanged")
def original(x: torch.Tensor, ctx: StyleContext) -> torch.Tensor:
    """The images as they are."""
    return x.clone()


@STYLES.register("inverted", summary="1 - pixel")
def inverted(x: torch.Tensor, ctx: StyleContext) -> torch.Tensor:
    """Raw pixels r -> 1 - r, i.e. x -> (1 - 2 mean) / std - x in normalised space."""
    return (1.0 - 2.0 * _per_channel(ctx.mean, x)) / _per_channel(ctx.std, x) - x


@STYLES.register("rotated", summary="turned by 90 degrees (180 if not square)")
def rotated(x: torch.Tensor, ctx: StyleContext) -> torch.Tensor:
    """A quarter turn of every image (a half turn when height != width)."""
    k = 1 if x.shape[-1] == x.shape[-2] else 2
    return torch.rot90(x, k, dims=(-2, -1)).contiguous()


@STYLES.register("noisy", summary="additive Gaussian noise, noise_std in raw pixel units")
def noisy(x: torch.Tensor, ctx: StyleContext) -> torch.Tensor:
    """r -> r + eps, eps ~ N(0, noise_std^2) per pixel, drawn from the context's generator."""
    eps = torch.randn(x.shape, generator=ctx.generator, dtype=x.dtype) * ctx.noise_std
    return x + eps / _per_channel(ctx.std, x)


DEFAULT_STYLES = ("original", "inverted", "rotated", "noisy")


class DomainsParams(Params):
    """Parameters of ``domains``."""

    styles: tuple[str, ...] = Field(DEFAULT_STYLES, min_length=1, description="client k gets styles[k mod S]")
    noise_std: float = Field(0.3, ge=0, description="std of the 'noisy' style, raw pixel units")

    @field_validator("styles")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in value if s not in STYLES]
        if unknown:
            raise ValueError(f"unknown style {unknown[0]!r}; expected some of: {', '.join(STYLES.names())}")
        return value


@PARTITIONERS.register("domains", DomainsParams, "iid split, one image style per client (feature shift)")
def domains(
    labels: np.ndarray, num_clients: int, params: DomainsParams, rng: np.random.Generator
) -> list[np.ndarray]:
    """An ``iid`` split; the styles are applied to each client's images by :func:`styled`.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels ``[N]``.
    num_clients : int
        Number of clients K.
    params : DomainsParams
        Styles and noise level (used by :func:`client_style` and :func:`styled`).
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    list of np.ndarray
        K sorted index arrays of near-equal size.
    """
    return iid(labels, num_clients, NoParams(), rng)


def client_style(partition: str, partition_params: Mapping[str, Any], partition_id: int) -> str | None:
    """The style of client ``partition_id`` under a ``domains`` partition (None otherwise)."""
    if partition != "domains":
        return None
    styles = DomainsParams.model_validate(dict(partition_params)).styles
    return styles[partition_id % len(styles)]


def styled(
    x: torch.Tensor,
    style: str | None,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    noise_std: float,
    seed: tuple[int, ...],
) -> torch.Tensor:
    """``x`` under ``style`` (a copy; ``x`` unchanged). ``seed`` fixes the noise draw.

    Parameters
    ----------
    x : torch.Tensor
        Normalised images ``[N, C, H, W]``.
    style : str or None
        A registered style; None returns ``x`` itself.
    mean, std : tuple of float
        Per-channel statistics of the normalisation (``Dataset.mean`` / ``Dataset.std``).
    noise_std : float
        Noise level of ``noisy``, raw pixel units.
    seed : tuple of int
        Integers that fix the noise (e.g. scenario seed, client, split).

    Returns
    -------
    torch.Tensor
        The transformed images.
    """
    if style is None:
        return x
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([SALT_NOISE, *seed]).generate_state(1)[0]))
    return STYLES.get(style)(x, StyleContext(tuple(mean), tuple(std), noise_std, gen))
