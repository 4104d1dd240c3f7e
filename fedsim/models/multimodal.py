"""Image and text encoders for multimodal FL (CreamFL), and the ``multimodal`` model entry.

- :class:`ImageEncoder`: conv3x3-ReLU-maxpool blocks, adaptive average pool, linear to
  ``d``, L2-normalised.
- :class:`TextEncoder`: word embedding, bidirectional GRU, mean over the caption's
  tokens (padding excluded), linear to ``d``, L2-normalised.
- :class:`MultimodalNet`: either or both encoders plus optional classifier heads;
  clients use the small widths, the server the larger ``server_*`` widths.
- ``image_encoder`` / ``text_encoder`` (and the ``server_*`` ones) may instead name the
  pretrained encoders of :mod:`fedsim.models.pretrained_encoders` (EfficientNet-Lite0 on
  ImageNet, all-MiniLM-L6-v2), installed by ``make pretrained``.

The registered ``multimodal`` model (what ``fedsim list models`` shows and the
scenario's ``model`` section configures) is the image client's classifier: the small
image encoder as ``features`` and a linear head. CreamFL builds the other networks
from the same parameters with :func:`build_multimodal`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from fedsim.config import Params
from fedsim.models.base import SplitModel
from fedsim.models.zoo import MODELS, InputShape

Channels = tuple[Annotated[int, Field(ge=1, le=1024)], ...]


#: Image encoders: fedsim's small CNN, or EfficientNet-Lite0 with ImageNet weights (make pretrained).
ImageKind = Literal["cnn", "efficientnet_lite0"]
#: Text encoders: fedsim's Bi-GRU, or the pretrained all-MiniLM-L6-v2 BERT (make pretrained).
TextKind = Literal["gru", "minilm"]


class MultimodalParams(Params):
    """Parameters of ``multimodal``: embedding dimension, client and server encoders and widths."""

    embed_dim: int = Field(64, ge=2, le=4096, description="d: dimension of the shared embedding space")
    image_channels: Channels = Field((16, 32), min_length=1, max_length=6, description="client CNN blocks")
    text_width: int = Field(48, ge=4, le=2048, description="client word embedding and GRU width")
    server_image_channels: Channels = Field((32, 64, 64), min_length=1, max_length=6)
    server_text_width: int = Field(96, ge=4, le=2048, description="server word embedding and GRU width")
    image_encoder: ImageKind = Field(
        "cnn", description="clients' image encoder (pretrained: make pretrained)"
    )
    text_encoder: TextKind = Field("gru", description="clients' text encoder")
    server_image_encoder: ImageKind = Field("cnn", description="the server's image encoder")
    server_text_encoder: TextKind = Field("gru", description="the server's text encoder")


def l2_normalise(z: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm."""
    return nn.functional.normalize(z, dim=-1)


class ImageEncoder(nn.Module):
    """Small CNN mapping ``[B, C, H, W]`` images to unit vectors ``[B, d]``."""

    def __init__(self, input_shape: InputShape, channels: tuple[int, ...], embed_dim: int) -> None:
        super().__init__()
        in_ch, h, w = input_shape
        layers: list[nn.Module] = []
        for out_ch in channels:
            layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(inplace=True)]
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            in_ch = out_ch
        layers += [nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(), nn.Linear(in_ch * 4, embed_dim)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of ``x``."""
        return l2_normalise(self.body(x))


class TextEncoder(nn.Module):
    """Bi-GRU over token ids ``[B, L]`` (0 = padding), mean-pooled, to unit vectors ``[B, d]``."""

    def __init__(self, vocab_size: int, width: int, embed_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=0)
        self.gru = nn.GRU(width, width, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * width, embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of the captions ``tokens``."""
        mask = (tokens != 0).unsqueeze(-1).float()
        out, _ = self.gru(self.embed(tokens))
        pooled = (out * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return l2_normalise(self.proj(pooled))


class MultimodalNet(nn.Module):
    """An image encoder and/or a text encoder, each with an optional classifier head."""

    def __init__(
        self,
        image: nn.Module | None,
        text: nn.Module | None,
        embed_dim: int,
        image_classes: int = 0,
        text_classes: int = 0,
    ) -> None:
        super().__init__()
        self.image = image
        self.text = text
        self.image_head = nn.Linear(embed_dim, image_classes) if image_classes else None
        self.text_head = nn.Linear(embed_dim, text_classes) if text_classes else None

    def encode(self, modality: str, inputs: torch.Tensor) -> torch.Tensor:
        """Embeddings of ``inputs`` by the encoder of ``modality`` (``image`` or ``text``)."""
        encoder = self.image if modality == "image" else self.text
        if encoder is None:
            raise ValueError(f"this network has no {modality} encoder")
        return encoder(inputs)


def _lite_image(input_shape: InputShape, channels: tuple[int, ...], d: int) -> nn.Module:
    from fedsim.models.pretrained_encoders import LiteImageEncoder

    return LiteImageEncoder(input_shape[0], d)


def _minilm_text(vocab_size: int, width: int, d: int) -> nn.Module:
    from fedsim.data.captions import vocabulary
    from fedsim.models.pretrained_encoders import MiniLMTextEncoder

    return MiniLMTextEncoder(vocabulary(), d)


#: ``kind -> (input_shape, channels, d) -> encoder``; the widths only matter to the CNN.
IMAGE_ENCODERS: dict[str, Callable[[InputShape, tuple[int, ...], int], nn.Module]] = {
    "cnn": ImageEncoder,
    "efficientnet_lite0": _lite_image,
}
#: ``kind -> (vocab_size, width, d) -> encoder``; the width only matters to the Bi-GRU.
TEXT_ENCODERS: dict[str, Callable[[int, int, int], nn.Module]] = {"gru": TextEncoder, "minilm": _minilm_text}


def build_multimodal(
    params: MultimodalParams,
    input_shape: InputShape,
    vocab_size: int,
    *,
    image: bool,
    text: bool,
    server: bool = False,
    image_classes: int = 0,
    text_classes: int = 0,
) -> MultimodalNet:
    """A client (small widths) or server (``server_*`` widths) network with the chosen encoders."""
    channels = params.server_image_channels if server else params.image_channels
    width = params.server_text_width if server else params.text_width
    image_kind = params.server_image_encoder if server else params.image_encoder
    text_kind = params.server_text_encoder if server else params.text_encoder
    d = params.embed_dim
    return MultimodalNet(
        IMAGE_ENCODERS[image_kind](input_shape, tuple(channels), d) if image else None,
        TEXT_ENCODERS[text_kind](vocab_size, width, d) if text else None,
        d,
        image_classes if image else 0,
        text_classes if text else 0,
    )


@MODELS.register(
    "multimodal",
    params=MultimodalParams,
    summary="CreamFL encoders: small CNN image / Bi-GRU text, L2-normalised d-dim embeddings",
)
def build_image_classifier(params: MultimodalParams, input_shape: InputShape, num_classes: int) -> SplitModel:
    """The image client's classifier: the small image encoder and a linear head."""
    return SplitModel(
        IMAGE_ENCODERS[params.image_encoder](input_shape, tuple(params.image_channels), params.embed_dim),
        params.embed_dim,
        num_classes,
    )
