"""A ViT in the timm layout, for pretrained weights (timm ViT, DINOv2, Hugging Face ViT).

The blocks are those of timm's ``VisionTransformer`` and of DINOv2: pre-norm, one fused
``qkv`` projection, exact GELU, and (DINOv2) a learned per-channel layer scale on both
residual branches. The state dict uses timm's names (``patch_embed.proj``, ``cls_token``,
``pos_embed``, ``blocks.{i}.attn.qkv``, ``blocks.{i}.ls1.gamma``, ``norm``), so timm and
DINOv2 checkpoints load as they are and :mod:`fedsim.pretrained.layouts` renames the
Hugging Face ones. The defaults are ViT-S/14 as DINOv2 trains it.

Like :class:`fedsim.models.vit.ViTEncoder` it takes VPT-shallow prompts, so the prompt
algorithms run on it unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from fedsim.config import Params
from fedsim.models.base import SplitModel
from fedsim.models.vit import PromptViT
from fedsim.models.zoo import MODELS, InputShape


class TimmViTParams(Params):
    """Parameters of ``timm_vit`` (defaults: DINOv2 ViT-S/14)."""

    patch_size: int = Field(14, ge=1, le=64, description="side of a square patch")
    dim: int = Field(384, ge=8, le=2048, description="token width (embed_dim)")
    depth: int = Field(12, ge=1, le=48, description="encoder blocks")
    heads: int = Field(6, ge=1, le=64, description="attention heads (must divide dim)")
    mlp_ratio: float = Field(4.0, gt=0, le=8, description="hidden width of each MLP / dim")
    layer_scale: bool = Field(True, description="per-channel scales on the residual branches (DINOv2)")
    norm_eps: float = Field(1e-6, gt=0, lt=1e-2, description="LayerNorm epsilon")


class LayerScale(nn.Module):
    """``x * gamma``, one learned scale per channel (DINOv2 starts it at 1e-5; loads overwrite)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled ``x``."""
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention over the tokens of ``x`` ``[B, N, dim]``."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """``fc2(gelu(fc1(x)))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP of ``x``."""
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, params: TimmViTParams) -> None:
        super().__init__()
        dim = params.dim
        self.norm1 = nn.LayerNorm(dim, eps=params.norm_eps)
        self.attn = Attention(dim, params.heads)
        self.ls1: nn.Module = LayerScale(dim) if params.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=params.norm_eps)
        self.mlp = Mlp(dim, int(dim * params.mlp_ratio))
        self.ls2: nn.Module = LayerScale(dim) if params.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One encoder block."""
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """``proj``: the strided convolution that turns patches into tokens (timm's name)."""

    def __init__(self, channels: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens as a map ``[B, dim, H/p, W/p]``."""
        return self.proj(x)


class TimmViT(PromptViT):
    """Patch embedding, class token, position table, blocks, final norm (timm's names).

    Parameters
    ----------
    input_shape : tuple of int
        ``(channels, height, width)``; each side at least one patch (the rest is cropped
        by the strided convolution, as in timm and DINOv2).
    params : TimmViTParams
        Architecture.
    """

    def __init__(self, input_shape: InputShape, params: TimmViTParams) -> None:
        super().__init__()
        c, h, w = input_shape
        p = params.patch_size
        if h < p or w < p:
            raise ValueError(f"timm_vit: the image {h}x{w} is smaller than one {p}x{p} patch")
        if params.dim % params.heads:
            raise ValueError(f"timm_vit: heads {params.heads} must divide dim {params.dim}")
        self.patch_size = p
        self.dim = params.dim
        self.grid = (h // p, w // p)
        self.num_patches = self.grid[0] * self.grid[1]
        self.patch_embed = PatchEmbed(c, params.dim, p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, params.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, params.dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*(Block(params) for _ in range(params.depth)))
        self.norm = nn.LayerNorm(params.dim, eps=params.norm_eps)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)


@MODELS.register(
    "timm_vit",
    params=TimmViTParams,
    summary="ViT in timm's layout (DINOv2 ViT-S/14 by default): loads timm, DINOv2 and HF ViT weights",
)
def build_timm_vit(params: TimmViTParams, input_shape: InputShape, num_classes: int) -> SplitModel:
    """A ``SplitModel`` whose ``features`` is a :class:`TimmViT` (feature_dim = dim)."""
    return SplitModel(TimmViT(input_shape, params), params.dim, num_classes)
