"""A BERT text encoder whose parameters carry Hugging Face ``BertModel``'s names.

Devlin et al., "BERT" (NAACL 2019): word + position + token-type embeddings and a
LayerNorm, then post-norm encoder layers

    x = LN(x + Attention(x)),    x = LN(x + W_2 GELU(W_1 x)),

with exact (erf) GELU. Padded keys get ``finfo.min`` added to their attention scores.
There is no dropout: the module is meant for inference and fine-tuning of checkpoints
such as sentence-transformers' all-MiniLM-L6-v2, whose ``state_dict`` it loads strictly
(after dropping ``embeddings.position_ids``, and ``pooler.*`` unless ``pooler=True``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class BertConfig:
    """Sizes of a BERT encoder (defaults: all-MiniLM-L6-v2)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_positions: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads {self.num_heads} must divide hidden_size {self.hidden_size}")

    @classmethod
    def from_json(cls, path: str | Path) -> BertConfig:
        """Read a Hugging Face BERT ``config.json``.

        Parameters
        ----------
        path : str or Path
            The file; its ``hidden_act`` must be ``"gelu"`` (exact GELU).

        Returns
        -------
        BertConfig
            The sizes it names.
        """
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        for key, supported in (("hidden_act", "gelu"), ("position_embedding_type", "absolute")):
            if raw.get(key, supported) != supported:
                raise ValueError(f"{path}: {key} {raw[key]!r} is not supported (only {supported!r})")
        return cls(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=int(raw["num_attention_heads"]),
            intermediate_size=int(raw["intermediate_size"]),
            max_positions=int(raw["max_position_embeddings"]),
            type_vocab_size=int(raw["type_vocab_size"]),
            layer_norm_eps=float(raw["layer_norm_eps"]),
        )


class _Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x + self.position_embeddings(positions))


class _SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.hidden_size // cfg.num_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias
        out = scores.softmax(dim=-1) @ v
        return out.transpose(1, 2).reshape(b, n, h)


class _DenseNorm(nn.Module):
    """``LN(residual + dense(x))``: HF's ``BertSelfOutput`` and ``BertOutput``."""

    def __init__(self, d_in: int, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dense(x))


class _Attention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(cfg)
        self.output = _DenseNorm(cfg.hidden_size, cfg)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class _Activated(nn.Module):
    """``act(dense(x))``: HF's ``BertIntermediate`` (exact GELU) and ``BertPooler`` (tanh)."""

    def __init__(self, d_in: int, d_out: int, act: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Activated(cfg.hidden_size, cfg.intermediate_size, nn.functional.gelu)
        self.output = _DenseNorm(cfg.intermediate_size, cfg)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, bias)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_layers))


class BertEncoder(nn.Module):
    """BERT encoder with Hugging Face ``BertModel`` parameter names; returns the last hidden state.

    Parameters
    ----------
    config : BertConfig
        Sizes.
    pooler : bool
        Also hold ``pooler.dense`` (tanh of a dense layer on the ``[CLS]`` state), to load
        checkpoints that carry it strictly; ``forward`` never uses it (see ``pooled``).
    """

    def __init__(self, config: BertConfig, pooler: bool = False) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)
        self.pooler = _Activated(config.hidden_size, config.hidden_size, torch.tanh) if pooler else None
        for module in self.modules():  # BERT's initialisation; LayerNorms keep their 1 and 0
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Last hidden state.

        Parameters
        ----------
        ids : torch.Tensor
            ``[B, L]`` token ids, ``L <= max_positions``.
        mask : torch.Tensor, optional
            ``[B, L]``, nonzero on real tokens, 0 on padding; all real when None.
        token_type_ids : torch.Tensor, optional
            ``[B, L]`` segment ids; all 0 when None.

        Returns
        -------
        torch.Tensor
            ``[B, L, hidden_size]``.
        """
        if ids.shape[1] > self.config.max_positions:
            raise ValueError(
                f"sequence length {ids.shape[1]} exceeds max_positions {self.config.max_positions}"
            )
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(ids)
        x = self.embeddings(ids, token_type_ids)
        bias = torch.zeros(() if mask is None else mask.shape, dtype=x.dtype, device=x.device)
        if mask is not None:  # finfo.min on padded keys, broadcast as [B, 1, 1, L]
            bias = bias.masked_fill(mask == 0, torch.finfo(x.dtype).min)[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x

    def pooled(self, hidden: torch.Tensor) -> torch.Tensor:
        """BERT's pooler output ``tanh(W h_[CLS] + b)``, ``[B, hidden_size]`` (needs ``pooler=True``)."""
        if self.pooler is None:
            raise RuntimeError("this BertEncoder was built without a pooler (pooler=False)")
        return self.pooler(hidden[:, 0])


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens' states (sentence-transformers' mean pooling).

    Parameters
    ----------
    hidden : torch.Tensor
        ``[B, L, H]`` token states.
    mask : torch.Tensor
        ``[B, L]``, nonzero on real tokens.

    Returns
    -------
    torch.Tensor
        ``[B, H]``; a row without real tokens gives zeros.
    """
    weights = (mask != 0).to(hidden.dtype).unsqueeze(-1)
    total = (hidden * weights).sum(dim=1)
    return total / weights.sum(dim=1).clamp(min=1e-9)
