"""A pretrained text encoder and its tokenizer from a Hugging Face BERT folder.

The folder holds the weights (``model.safetensors`` or ``pytorch_model.bin``), ``config.json``
and ``vocab.txt``, as Hugging Face and sentence-transformers save them; the catalog's
``minilm-l6-v2`` is one. :func:`text_encoder` builds the :class:`~fedsim.models.bert.BertEncoder`
of the config, loads the weights strictly and returns it with its WordPiece tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fedsim.errors import UserError
from fedsim.models.bert import BertConfig, BertEncoder, mean_pool
from fedsim.models.wordpiece import WordPiece
from fedsim.pretrained import load_pretrained, resolve


@dataclass
class TextEncoder:
    """A BERT encoder, its tokenizer and the longest caption it reads (in tokens)."""

    encoder: BertEncoder
    tokenizer: WordPiece
    max_length: int = 64

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Mean-pooled last hidden states ``[B, hidden]`` of ``texts`` (sentence-transformers)."""
        ids, mask = self.tokenizer.encode(texts, self.max_length)
        return mean_pool(self.encoder(ids, mask), mask)


def _beside(path: Path, name: str) -> Path:
    file = path.parent / name
    if not file.is_file():
        raise UserError(f"{name} not found beside {path}; a BERT checkpoint needs its {name}")
    return file


def text_encoder(value: str, max_length: int = 64) -> TextEncoder:
    """The BERT encoder and tokenizer of ``value`` (a catalog name or a weights file)."""
    path = resolve(value)
    if not path.is_file():
        raise UserError(f"pretrained text encoder {str(path)!r} not found")
    encoder = BertEncoder(BertConfig.from_json(_beside(path, "config.json")))
    load_pretrained(encoder, value, layout="hf_bert", key=("bert", str(path)))
    return TextEncoder(encoder.eval(), WordPiece(_beside(path, "vocab.txt")), max_length)
