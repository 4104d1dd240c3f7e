"""Captions for ``shapes`` images, generated from their attributes, and their tokenizer.

Each caption names all six attributes of its image (shape, colour, size, position,
background, texture), phrased by one of several templates with synonyms drawn at
random, so that two images of the same class get different captions and retrieval is
instance-level: a caption matches one image only when every attribute matches.

The vocabulary is built by fedsim from the caption grammar itself (every word of every
template and synonym), so it is fixed, independent of the seed and of the data.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from fedsim.data.shapes import BACKGROUNDS, COLOURS, SHAPES, SIZES, TEXTURES

#: Synonyms of each attribute value (the first is the attribute's own name).
SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": {
        "circle": ("circle", "disc", "round shape"),
        "square": ("square", "box"),
        "triangle": ("triangle", "three sided shape"),
        "cross": ("cross", "plus sign"),
        "star": ("star", "five pointed star"),
        "ring": ("ring", "hoop"),
        "diamond": ("diamond", "rhombus"),
        "heart": ("heart", "heart shape"),
        "crescent": ("crescent", "moon"),
        "arrow": ("arrow", "pointer"),
    },
    "colour": {
        "red": ("red", "scarlet"),
        "orange": ("orange", "tangerine"),
        "yellow": ("yellow", "golden"),
        "green": ("green", "lime"),
        "cyan": ("cyan", "turquoise"),
        "blue": ("blue", "azure"),
        "purple": ("purple", "violet"),
        "pink": ("pink", "rose"),
    },
    "size": {
        "small": ("small", "little", "tiny"),
        "medium": ("medium", "mid sized"),
        "large": ("large", "big"),
    },
    "background": {
        "black": ("black", "jet black"),
        "white": ("white", "snow white"),
        "gray": ("gray", "grey"),
        "navy": ("navy", "dark blue"),
        "dark green": ("dark green", "forest green"),
        "beige": ("beige", "cream"),
        "brown": ("brown", "chocolate"),
        "maroon": ("maroon", "burgundy"),
    },
    "texture": {
        "solid": ("solid", "plain", "filled"),
        "striped": ("striped", "stripy"),
        "dotted": ("dotted", "spotted"),
    },
}
ROW_WORDS: dict[str, tuple[str, ...]] = {
    "top": ("top", "upper"),
    "middle": ("middle",),
    "bottom": ("bottom", "lower"),
}
COL_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("left",),
    "center": ("center", "middle"),
    "right": ("right",),
}
CENTRE_WORDS: tuple[str, ...] = ("center", "middle", "centre")
POSITION_FORMS: tuple[str, ...] = ("in the {p}", "at the {p}", "towards the {p}")

#: Templates: every one names all six attributes, in different orders and phrasings.
TEMPLATES: tuple[str, ...] = (
    "a {size} {texture} {colour} {shape} {position} on a {background} background",
    "{position} there is a {size} {colour} {shape} with a {texture} pattern , the background is {background}",
    "a {background} picture with a {texture} {colour} {shape} of {size} size {position}",
    "{size} {colour} {shape} , {texture} , placed {position} against {background}",
    "on a {background} background a {colour} {texture} {shape} sits {position} , it is {size}",
    "the image shows a {shape} that is {colour} and {texture} , {size} , {position} , over {background}",
)

#: Attributes a text client may classify, and their classes in label order.
ATTRIBUTE_CLASSES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "size": tuple(SIZES),
    "background": tuple(BACKGROUNDS),
    "texture": TEXTURES,
    "position": tuple(
        "center" if (r, c) == ("middle", "center") else f"{r} {c}"
        for r in ("top", "middle", "bottom")
        for c in ("left", "center", "right")
    ),
}

PAD, UNK = "<pad>", "<unk>"
#: Every caption is padded (with id 0) or cut to this many tokens.
MAX_TOKENS = 32
_WORD = re.compile(r"[a-z]+|,")


def tokenize(text: str) -> list[str]:
    """Lower-case words and commas of ``text``, in order."""
    return _WORD.findall(text.lower())


def _position_phrase(position: str, rng: np.random.Generator) -> str:
    if position == "center":
        place = str(rng.choice(CENTRE_WORDS))
    else:
        row, col = position.split(" ")
        place = f"{rng.choice(ROW_WORDS[row])} {rng.choice(COL_WORDS[col])}"
    return str(rng.choice(POSITION_FORMS)).format(p=place)


def caption(attributes: dict, rng: np.random.Generator) -> str:
    """One caption of an image with ``attributes`` (template and synonyms drawn from ``rng``).

    Parameters
    ----------
    attributes : dict
        The image's shape, colour, size, position, background and texture, as
        :func:`fedsim.data.shapes.generate_shapes` returns them.
    rng : np.random.Generator
        Source of the template and synonym choices.

    Returns
    -------
    str
        The caption, lower case, words separated by single spaces.
    """
    words = {key: str(rng.choice(SYNONYMS[key][attributes[key]])) for key in SYNONYMS}
    words["position"] = _position_phrase(attributes["position"], rng)
    return TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(**words)


def captions(attributes: Sequence[dict], rng: np.random.Generator) -> list[str]:
    """One caption per image, drawn in order from ``rng``."""
    return [caption(a, rng) for a in attributes]


@lru_cache(maxsize=1)
def vocabulary() -> dict[str, int]:
    """Word -> id for every word the caption grammar can produce (``<pad>`` 0, ``<unk>`` 1)."""
    texts = [*TEMPLATES, *POSITION_FORMS, *CENTRE_WORDS]
    texts += [w for group in SYNONYMS.values() for options in group.values() for w in options]
    texts += [w for words in (*ROW_WORDS.values(), *COL_WORDS.values()) for w in words]
    words = {w for t in texts for w in tokenize(re.sub(r"\{\w+\}", " ", t))}
    return {w: i for i, w in enumerate([PAD, UNK, *sorted(words)])}


def encode(texts: Sequence[str], max_tokens: int = MAX_TOKENS) -> torch.Tensor:
    """Token ids ``[N, max_tokens]`` (int64), padded with 0, unknown words as ``<unk>``.

    Raises
    ------
    ValueError
        When a text has more than ``max_tokens`` tokens (captions never do).
    """
    vocab = vocabulary()
    out = torch.zeros((len(texts), max_tokens), dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [vocab.get(w, 1) for w in tokenize(text)]
        if len(ids) > max_tokens:
            raise ValueError(f"caption has {len(ids)} tokens, more than max_tokens={max_tokens}: {text!r}")
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def attribute_labels(attributes: Sequence[dict], name: str) -> torch.Tensor:
    """Class index of attribute ``name`` of each image (int64 ``[N]``)."""
    classes = {c: i for i, c in enumerate(ATTRIBUTE_CLASSES[name])}
    return torch.tensor([classes[a[name]] for a in attributes], dtype=torch.long)
