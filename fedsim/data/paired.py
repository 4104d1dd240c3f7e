"""Paired image-caption sets for multimodal federated learning (CreamFL).

From a ``shapes`` federated split (:class:`fedsim.data.FederatedData`):

- public set: ``public_size`` extra ``shapes`` images generated from their own stream of
  the seed, each with one caption; seen by the server and by every client;
- test set: the dataset's test split (1k images in the shipped scenarios), one caption
  each, used for image-text retrieval;
- private sets: each client's training images (its partition) with their captions.

Each client holds one modality, by partition id: ``modalities[pid % len(modalities)]``.
An ``image`` client classifies shapes from its images, a ``text`` client classifies
one caption attribute (``text_label``, e.g. the colour) from its captions, an
``image_text`` client holds pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from fedsim.data.base import derive_rng
from fedsim.data.captions import ATTRIBUTE_CLASSES, attribute_labels, captions, encode
from fedsim.data.federated import FederatedData
from fedsim.data.shapes import generate_shapes
from fedsim.errors import UserError

Modality = Literal["image", "text", "image_text"]
#: Which encoders each modality has.
HAS_IMAGE: dict[str, bool] = {"image": True, "text": False, "image_text": True}
HAS_TEXT: dict[str, bool] = {"image": False, "text": True, "image_text": True}

SALT_PUBLIC = 0xC0B1
SALT_CAPTIONS = 0xCA97


@dataclass(frozen=True, eq=False)
class PairedSet:
    """Images ``[N, C, H, W]`` (normalised like the dataset), token ids ``[N, L]``, attributes."""

    images: torch.Tensor
    tokens: torch.Tensor
    texts: tuple[str, ...]
    attributes: tuple[dict, ...]

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True, eq=False)
class PrivateSet:
    """One client's private data: its modality, inputs of that modality and labels."""

    modality: Modality
    images: torch.Tensor | None
    tokens: torch.Tensor | None
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> PrivateSet:
        """The same set with its tensors on ``device``."""
        images = None if self.images is None else self.images.to(device)
        tokens = None if self.tokens is None else self.tokens.to(device)
        return PrivateSet(self.modality, images, tokens, self.labels.to(device))


@dataclass(frozen=True, eq=False)
class PairedData:
    """Public, test and per-client private paired sets of one run."""

    public: PairedSet
    test: PairedSet
    train: PairedSet
    train_indices: tuple[np.ndarray, ...]
    modalities: tuple[Modality, ...]
    text_label: str

    @property
    def num_text_classes(self) -> int:
        """Classes of the caption attribute that text clients classify."""
        return len(ATTRIBUTE_CLASSES[self.text_label])

    def modality_of(self, partition_id: int) -> Modality:
        """The modality client ``partition_id`` holds."""
        return modality_of(partition_id, self.modalities)

    def private(self, partition_id: int) -> PrivateSet:
        """Client ``partition_id``'s private set (its training partition, in its modality)."""
        idx = torch.tensor(self.train_indices[partition_id], dtype=torch.long)
        modality = self.modality_of(partition_id)
        attrs = [self.train.attributes[i] for i in idx.tolist()]
        label = self.text_label if modality == "text" else "shape"
        return PrivateSet(
            modality,
            self.train.images[idx] if HAS_IMAGE[modality] else None,
            self.train.tokens[idx] if HAS_TEXT[modality] else None,
            attribute_labels(attrs, label),
        )


def modality_of(partition_id: int, modalities: tuple[Modality, ...]) -> Modality:
    """``modalities[partition_id % len(modalities)]``."""
    return modalities[partition_id % len(modalities)]


def _paired(images: torch.Tensor, attributes: list[dict], rng: np.random.Generator) -> PairedSet:
    texts = captions(attributes, rng)
    return PairedSet(images, encode(texts), tuple(texts), tuple(attributes))


def build_paired(
    fed: FederatedData,
    public_size: int,
    seed: int,
    modalities: tuple[Modality, ...] = ("image", "text", "image_text"),
    text_label: str = "colour",
) -> PairedData:
    """Paired public, test and private sets for a ``shapes`` split.

    Parameters
    ----------
    fed : FederatedData
        A split of a dataset with per-image attributes (``shapes``).
    public_size : int
        Pairs in the public set.
    seed : int
        The scenario seed (public images and every caption are drawn from it).
    modalities : tuple of str
        Client modalities, assigned by partition id in turn.
    text_label : str
        The caption attribute text clients classify.

    Returns
    -------
    PairedData
        The sets; a deterministic function of the arguments.

    Raises
    ------
    UserError
        When the dataset has no attributes to caption.
    """
    ds = fed.dataset
    if ds.attributes_train is None or ds.attributes_test is None:
        raise UserError(
            f"dataset {ds.name!r} has no image attributes to caption; expected data.dataset 'shapes'"
        )
    if text_label not in ATTRIBUTE_CLASSES:
        raise UserError(f"text_label {text_label!r}; expected one of: {', '.join(ATTRIBUTE_CLASSES)}")
    size = ds.input_shape[1]
    raw, _, public_attrs = generate_shapes(public_size, size, derive_rng(seed, SALT_PUBLIC))
    mean = torch.tensor(ds.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(ds.std, dtype=torch.float32).view(1, -1, 1, 1)
    public_images = (torch.from_numpy(raw) - mean) / std
    rng = derive_rng(seed, SALT_CAPTIONS)
    return PairedData(
        public=_paired(public_images, list(public_attrs), rng),
        test=_paired(ds.x_test, list(ds.attributes_test), rng),
        train=_paired(ds.x_train, list(ds.attributes_train), rng),
        train_indices=tuple(fed.train_indices),
        modalities=tuple(modalities),
        text_label=text_label,
    )
