"""A small Vision Transformer that takes visual prompts (VPT-shallow).

Dosovitskiy et al., "An image is worth 16x16 words" (ICLR 2021): patch embedding, a
class token, learned positional embeddings, pre-norm encoder blocks, and the class
token's final state as the feature vector. Jia et al., "Visual prompt tuning" (ECCV
2022), VPT-shallow: K prompt tokens are inserted between the class token and the patch
tokens, after the positional embeddings were added, so the encoder sees

    [x_cls + e_0, p_1, ..., p_K, E x_1 + e_1, ..., E x_M + e_M].

Prompts carry no positional embedding. ``features(x)`` without prompts is an ordinary
ViT, so the model also works as a plain ``SplitModel`` for any algorithm.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from fedsim.config import Params
from fedsim.models.base import SplitModel
from fedsim.models.zoo import MODELS, InputShape


class ViTParams(Params):
    """Parameters of ``vit``."""

    patch_size: int = Field(2, ge=1, le=64, description="side of a square patch (must divide the image)")
    dim: int = Field(64, ge=8, le=1024, description="token width (embed_dim)")
    depth: int = Field(3, ge=1, le=24, description="encoder blocks")
    heads: int = Field(4, ge=1, le=32, description="attention heads (must divide dim)")
    mlp_ratio: float = Field(2.0, gt=0, le=8, description="hidden width of each MLP / dim")


class PromptViT(nn.Module):
    """What every prompt-taking ViT shares: ``[cls, prompts, patches]`` through its blocks.

    Subclasses set ``patch_embed`` (a strided conv), ``cls_token`` ``[1, 1, dim]``,
    ``pos_embed`` ``[1, 1 + M, dim]``, ``blocks`` (``[B, N, dim] -> [B, N, dim]``), ``norm``,
    and the ints ``dim``, ``patch_size`` and ``num_patches``.
    """

    patch_embed: nn.Module
    cls_token: nn.Parameter
    pos_embed: nn.Parameter
    blocks: nn.Module
    norm: nn.LayerNorm
    dim: int
    patch_size: int
    num_patches: int

    def tokens(self, x: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's input sequence ``[cls, prompts, patches]`` (VPT-shallow).

        Parameters
        ----------
        x : torch.Tensor
            Images ``[B, C, H, W]``.
        prompts : torch.Tensor, optional
            ``[K, dim]`` (shared by the batch) or ``[B, K, dim]``.

        Returns
        -------
        torch.Tensor
            ``[B, 1 + K + M, dim]`` with M patches.
        """
        patches = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(len(x), -1, -1)
        if prompts is None:
            return torch.cat([cls, patches], dim=1)
        if prompts.dim() == 2:
            prompts = prompts.unsqueeze(0).expand(len(x), -1, -1)
        return torch.cat([cls, prompts, patches], dim=1)

    def forward(self, x: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """The class token's final state ``[B, dim]``, with optional prompts."""
        return self.norm(self.blocks(self.tokens(x, prompts))[:, 0])


class ViTEncoder(PromptViT):
    """Patch embedding, class token, positional embeddings, encoder blocks, final norm.

    Parameters
    ----------
    input_shape : tuple of int
        ``(channels, height, width)``; the patch size must divide height and width.
    params : ViTParams
        Patch size, width, depth, heads and MLP ratio.
    """

    def __init__(self, input_shape: InputShape, params: ViTParams) -> None:
        super().__init__()
        c, h, w = input_shape
        p = params.patch_size
        if h % p or w % p:
            raise ValueError(f"vit: patch_size {p} must divide the image size {h}x{w}")
        if params.dim % params.heads:
            raise ValueError(f"vit: heads {params.heads} must divide dim {params.dim}")
        self.patch_size = p
        self.dim = params.dim
        self.num_patches = (h // p) * (w // p)
        self.patch_embed = nn.Conv2d(c, params.dim, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, params.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, params.dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(
            params.dim,
            params.heads,
            dim_feedforward=int(params.dim * params.mlp_ratio),
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, params.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(params.dim)


@MODELS.register("vit", params=ViTParams, summary="small ViT (pre-norm) that accepts VPT-shallow prompts")
def build_vit(params: ViTParams, input_shape: InputShape, num_classes: int) -> SplitModel:
    """A ``SplitModel`` whose ``features`` is a :class:`ViTEncoder` (feature_dim = dim).

    Parameters
    ----------
    params : ViTParams
        Architecture.
    input_shape : tuple of int
        ``(channels, height, width)``.
    num_classes : int
        Number of classes.

    Returns
    -------
    SplitModel
        ``features(x, prompts=None)`` gives the class token's state; ``head`` a linear layer.
    """
    return SplitModel(ViTEncoder(input_shape, params), params.dim, num_classes)
