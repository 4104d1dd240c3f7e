"""Pretrained encoders for CreamFL's multimodal networks, from the checkpoints of ``make pretrained``.

- :class:`LiteImageEncoder`: EfficientNet-Lite0 trained on ImageNet (``efficientnet-lite0``),
  its pooled 1280 features projected to ``d`` and L2-normalised. It stands in for the
  ImageNet ResNets of the CreamFL paper.
- :class:`MiniLMTextEncoder`: the all-MiniLM-L6-v2 BERT (``minilm-l6-v2``), mean-pooled, then
  projected to ``d`` and L2-normalised. It stands in for the paper server's BERT.
  Captions arrive as ids of fedsim's caption vocabulary (:func:`fedsim.data.captions.vocabulary`).
  Each word maps to its WordPiece ids through a fixed table, so a caption reaches BERT as
  ``[CLS] pieces... [SEP]``, exactly what the WordPiece tokenizer gives for the caption's
  words joined by spaces.

Both fine-tune every weight. The projection is new, seeded like every fedsim model.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsim.models.bert import mean_pool
from fedsim.models.efficientnet import EfficientNetLite
from fedsim.models.wordpiece import WordPiece

#: Catalog names of the checkpoints these encoders load.
IMAGE_CHECKPOINT, TEXT_CHECKPOINT = "efficientnet-lite0", "minilm-l6-v2"


def _l2(z: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(z, dim=-1)


class LiteImageEncoder(nn.Module):
    """EfficientNet-Lite0 (ImageNet weights) -> linear to ``d`` -> unit vectors."""

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        from fedsim.pretrained import load_pretrained

        self.backbone = EfficientNetLite("lite0", in_channels)
        load_pretrained(self.backbone, IMAGE_CHECKPOINT, key=("creamfl-image", in_channels))
        self.proj = nn.Linear(1280, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of images ``[B, C, H, W]``."""
        return _l2(self.proj(self.backbone(x)))


def piece_table(words: dict[str, int], tokenizer: WordPiece) -> torch.Tensor:
    """``[V, P]``: the WordPiece ids of each caption-vocabulary word, padded with 0 ([PAD]).

    The padding and unknown words of the caption vocabulary get no pieces.
    """
    pieces = {i: tokenizer.ids(w)[1:-1] if i > 1 else [] for w, i in words.items()}  # drop [CLS]/[SEP]
    width = max(1, max(len(p) for p in pieces.values()))
    table = torch.zeros(len(words), width, dtype=torch.long)
    for i, p in pieces.items():
        table[i, : len(p)] = torch.tensor(p, dtype=torch.long)
    return table


class MiniLMTextEncoder(nn.Module):
    """all-MiniLM-L6-v2 over the WordPiece ids of fedsim captions -> linear to ``d`` -> unit vectors."""

    def __init__(self, words: dict[str, int], embed_dim: int) -> None:
        super().__init__()
        from fedsim.pretrained.text import text_encoder

        loaded = text_encoder(TEXT_CHECKPOINT)
        self.bert, tokenizer = loaded.encoder.train(), loaded.tokenizer
        self.pieces: torch.Tensor
        self.register_buffer("pieces", piece_table(words, tokenizer), persistent=False)
        self.cls, self.sep = tokenizer.cls_id, tokenizer.sep_id
        self.proj = nn.Linear(self.bert.config.hidden_size, embed_dim)

    def wordpiece_ids(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT ids and attention mask ``[B, L']`` of captions given as vocabulary ids ``[B, L]``."""
        pieces = self.pieces[tokens].flatten(1)  # [B, L * P], 0 where a word has fewer pieces
        real = pieces != 0
        order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)  # real pieces first, in order
        pieces, real = pieces.gather(1, order), real.gather(1, order)
        n = int(real.sum(1).max()) if len(tokens) else 0
        pieces, real = pieces[:, :n], real[:, :n]
        lengths = real.sum(1)
        b = len(tokens)
        ids = torch.zeros(b, n + 2, dtype=torch.long, device=tokens.device)
        ids[:, 0] = self.cls
        ids[:, 1 : n + 1] = pieces
        ids[torch.arange(b, device=tokens.device), lengths + 1] = self.sep
        mask = torch.arange(n + 2, device=tokens.device).unsqueeze(0) <= (lengths + 1).unsqueeze(1)
        return ids, mask.long()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of captions ``tokens`` (caption-vocabulary ids, 0 = padding)."""
        ids, mask = self.wordpiece_ids(tokens)
        return _l2(self.proj(mean_pool(self.bert(ids, mask), mask)))
