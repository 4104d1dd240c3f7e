"""``shapes``: procedurally generated RGB images of ten shapes, with their attributes.

Each image shows one shape on a plain background. Its foreground colour, size, position
on a 3x3 grid (plus jitter), background colour, texture and pixel noise are drawn at
random, and kept as a dict per image so that later work can caption them. Images are
rasterised with vectorised coordinate masks: each shape is an inequality on coordinates
``(u, v)`` centred on the shape and scaled by its radius (``v`` points down).
Everything is a deterministic function of ``(seed, options)``.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

from fedsim.data.base import Attributes

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "cross",
    "star",
    "ring",
    "diamond",
    "heart",
    "crescent",
    "arrow",
)
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "orange": (1.00, 0.55, 0.00),
    "yellow": (0.95, 0.90, 0.10),
    "green": (0.10, 0.75, 0.20),
    "cyan": (0.10, 0.85, 0.90),
    "blue": (0.15, 0.30, 0.95),
    "purple": (0.60, 0.20, 0.85),
    "pink": (1.00, 0.45, 0.75),
}
BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "black": (0.05, 0.05, 0.05),
    "white": (0.97, 0.97, 0.97),
    "gray": (0.50, 0.50, 0.50),
    "navy": (0.05, 0.08, 0.30),
    "dark green": (0.05, 0.30, 0.10),
    "beige": (0.90, 0.85, 0.70),
    "brown": (0.45, 0.28, 0.12),
    "maroon": (0.40, 0.05, 0.10),
}
SIZES: dict[str, float] = {"small": 0.15, "medium": 0.21, "large": 0.28}
ROWS: tuple[str, ...] = ("top", "middle", "bottom")
COLS: tuple[str, ...] = ("left", "center", "right")
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted")
NOISE_STD = 0.03
MIN_CONTRAST = 0.55  # smallest RGB distance between a foreground and its background

Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]


def position_name(row: int, col: int) -> str:
    """Name of a 3x3 grid cell: ``"top left"``, ``"middle right"``, ``"center"``..."""
    return "center" if (row, col) == (1, 1) else f"{ROWS[row]} {COLS[col]}"


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    outer, inner, half = 1.0, 0.45, np.pi / 5
    theta = np.mod(np.arctan2(u, -v), 2 * half)  # 0 = pointing up
    theta = np.where(theta > half, 2 * half - theta, theta)
    edge = outer * inner * np.sin(half) / (outer * np.sin(theta) + inner * np.sin(half - theta))
    return np.hypot(u, v) <= edge


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x, y = 1.15 * u, -1.15 * v + 0.15
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0


_MASKS: dict[str, Mask] = {
    "circle": lambda u, v: u**2 + v**2 <= 1.0,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.8,
    "triangle": lambda u, v: (v <= 0.75) & (np.abs(u) <= (v + 0.95) * 0.95 / 1.7),
    "cross": lambda u, v: (
        ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    ),
    "star": _star,
    "ring": lambda u, v: (u**2 + v**2 <= 1.0) & (u**2 + v**2 >= 0.55**2),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1.0,
    "heart": _heart,
    "crescent": lambda u, v: (u**2 + v**2 <= 1.0) & ((u - 0.45) ** 2 + v**2 > 0.8**2),
    "arrow": lambda u, v: (
        ((np.abs(v) <= 0.25) & (u >= -0.95) & (u <= 0.1))
        | ((u >= 0.1) & (np.abs(v) <= 0.75 * (0.95 - u) / 0.85))
    ),
}


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of ``shape`` at normalised coordinates ``(u, v)`` (unit radius).

    Parameters
    ----------
    shape : str
        One of `SHAPES`.
    u, v : np.ndarray
        Coordinates relative to the shape's centre divided by its radius; ``v`` points
        down.

    Returns
    -------
    np.ndarray
        True where the pixel belongs to the shape.
    """
    return _MASKS[shape](u, v)


def draw_attributes(n: int, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw the random attributes of ``n`` images (balanced classes)."""
    fg_rgb = np.array(list(COLOURS.values()))
    bg_rgb = np.array(list(BACKGROUNDS.values()))
    allowed = np.linalg.norm(fg_rgb[:, None] - bg_rgb[None], axis=-1) >= MIN_CONTRAST
    label = rng.permutation(np.arange(n) % len(SHAPES))
    colour = rng.integers(len(COLOURS), size=n)
    # Background: uniform over those far enough from the foreground colour.
    ranks = rng.random((n, len(BACKGROUNDS))) + ~allowed[colour]
    background = ranks.argmin(axis=1)
    size_idx = rng.integers(len(SIZES), size=n)
    radius = np.array(list(SIZES.values()))[size_idx] * size
    row, col = rng.integers(3, size=n), rng.integers(3, size=n)
    span = size - 2 * radius  # centres stay inside [radius, size - radius]
    jitter = rng.uniform(-0.4, 0.4, size=(2, n)) * span / 3
    cy = radius + (row + 0.5) / 3 * span + jitter[0]
    cx = radius + (col + 0.5) / 3 * span + jitter[1]
    return {
        "label": label,
        "colour": colour,
        "background": background,
        "size": size_idx,
        "radius": radius,
        "row": row,
        "col": col,
        "cx": cx,
        "cy": cy,
        "texture": rng.integers(len(TEXTURES), size=n),
        "phase": rng.uniform(0, 1, size=n),
    }


def _texture(kind: np.ndarray, phase: np.ndarray, yy: np.ndarray, xx: np.ndarray, size: int):
    """True where the texture shows the full foreground colour, ``[n, S, S]``."""
    period = max(3.0, size / 8)
    stripes = np.mod((xx + yy) / period + phase[:, None, None], 1.0) < 0.5
    du = np.mod(xx / period + phase[:, None, None], 1.0) - 0.5
    dv = np.mod(yy / period + phase[:, None, None], 1.0) - 0.5
    dots = du**2 + dv**2 <= 0.3**2
    kind = kind[:, None, None]
    return np.where(kind == 0, True, np.where(kind == 1, stripes, dots))


def _render(a: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Rasterise the images described by ``a`` into float32 ``[n, 3, S, S]`` (no noise yet)."""
    n = len(a["label"])
    grid = np.arange(size, dtype=np.float32) + 0.5
    yy, xx = grid[None, :, None], grid[None, None, :]
    r = a["radius"][:, None, None].astype(np.float32)
    u = (xx - a["cx"][:, None, None].astype(np.float32)) / r
    v = (yy - a["cy"][:, None, None].astype(np.float32)) / r
    mask = np.zeros((n, size, size), dtype=bool)
    for k, shape in enumerate(SHAPES):
        sel = np.flatnonzero(a["label"] == k)
        if len(sel):
            mask[sel] = shape_mask(shape, u[sel], v[sel])
    fg = np.array(list(COLOURS.values()), dtype=np.float32)[a["colour"]]
    bg = np.array(list(BACKGROUNDS.values()), dtype=np.float32)[a["background"]]
    # The texture's second tone: the foreground pushed towards black or white.
    bright = fg.mean(axis=1, keepdims=True) > 0.5
    shade = np.where(bright, fg * 0.55, fg + (1 - fg) * 0.45)
    full = _texture(a["texture"], a["phase"], yy, xx, size)
    return np.where(
        mask[:, None],
        np.where(full[:, None], fg[:, :, None, None], shade[:, :, None, None]),
        bg[:, :, None, None],
    )


def _noisy(part: dict[str, np.ndarray], size: int, noise: np.ndarray) -> np.ndarray:
    """Rasterise ``part``, add its ``noise`` and clip to [0, 1] (in a pool process or here)."""
    img = _render(part, size)
    img += noise
    return np.clip(img, 0.0, 1.0, out=img)


def _noise(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """The pixel noise of ``n`` images, drawn from ``rng`` in image order."""
    return rng.normal(0.0, NOISE_STD, size=(n, 3, size, size)).astype(np.float32)


def attributes_of(a: dict[str, np.ndarray]) -> Attributes:
    """The per-image attribute dicts of drawn attributes ``a``, built on demand."""
    return attributes_from_columns(
        {
            "label": a["label"],
            "colour": a["colour"],
            "size": a["size"],
            "position": np.asarray(a["row"]) * 3 + np.asarray(a["col"]),
            "background": a["background"],
            "texture": a["texture"],
        }
    )


def attributes_from_columns(columns: Mapping[str, np.ndarray]) -> Attributes:
    """Attributes over integer columns as `attributes_of` makes them (and as they are stored)."""
    positions = tuple(position_name(r, c) for r in range(3) for c in range(3))
    vocab = {
        "shape": ("label", SHAPES),
        "colour": ("colour", tuple(COLOURS)),
        "size": ("size", tuple(SIZES)),
        "position": ("position", positions),
        "background": ("background", tuple(BACKGROUNDS)),
        "texture": ("texture", TEXTURES),
    }
    return Attributes({k: np.asarray(v, dtype=np.int16) for k, v in columns.items()}, vocab)


#: Images rendered in a pool of processes when a set has at least this many pixels.
PARALLEL_PIXELS = 1 << 25


def shape_chunks(
    a: dict[str, np.ndarray], image_size: int, rng: np.random.Generator, chunk_pixels: int = 1 << 18
) -> Iterator[np.ndarray]:
    """The images of attributes ``a``, chunk after chunk, in order.

    Each chunk (about ``chunk_pixels`` pixels) gets its noise from ``rng`` in order, so
    the images depend on ``rng`` alone and not on how they were made: for large sets this
    process draws the noise (the one step that must be in order) while a pool of processes
    (one per CPU) rasterises the chunks and adds it.
    """
    n = len(a["label"])
    step = max(1, chunk_pixels // (image_size * image_size))
    parts = [{k: v[i : i + step] for k, v in a.items()} for i in range(0, n, step)]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if n * image_size * image_size < PARALLEL_PIXELS or cpus < 2 or len(parts) < 2:
        for part in parts:
            yield _noisy(part, image_size, _noise(len(part["label"]), image_size, rng))
        return
    # fork: the pool runs numpy code only, and starts without importing anything again
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(max_workers=cpus, mp_context=ctx) as pool:
        ahead: deque[Future[np.ndarray]] = deque()
        for part in parts:
            if len(ahead) > cpus:
                yield ahead.popleft().result()
            noise = _noise(len(part["label"]), image_size, rng)
            ahead.append(pool.submit(_noisy, part, image_size, noise))
        while ahead:
            yield ahead.popleft().result()


def generate_shapes(
    n: int, image_size: int, rng: np.random.Generator, chunk_pixels: int = 1 << 18
) -> tuple[np.ndarray, np.ndarray, Attributes]:
    """Generate ``n`` class-balanced shape images in memory.

    Parameters
    ----------
    n : int
        Number of images; class counts differ by at most one.
    image_size : int
        Side of the square images in pixels.
    rng : np.random.Generator
        Source of all randomness (attributes and noise).
    chunk_pixels : int
        Rasterise at most about this many pixels at once, to bound memory.

    Returns
    -------
    images : np.ndarray
        float32 ``[n, 3, S, S]``, values in [0, 1].
    labels : np.ndarray
        int64 ``[n]``, indices into `SHAPES`.
    attributes : Attributes
        Per image (a dict on access): shape, colour, size, position, background, texture.
    """
    a = draw_attributes(n, image_size, rng)
    images = np.empty((n, 3, image_size, image_size), dtype=np.float32)
    start = 0
    for chunk in shape_chunks(a, image_size, rng, chunk_pixels):
        images[start : start + len(chunk)] = chunk
        start += len(chunk)
    return images, a["label"].astype(np.int64), attributes_of(a)
