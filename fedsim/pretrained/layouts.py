"""Key layouts of public checkpoints, and their conversion to fedsim's models.

A :class:`Layout` renames (and where needed fuses) the tensors of a checkpoint written by
one library into the state dict of the fedsim model that mirrors it:

============================  =========================================  ====================
layout                        written by                                 fedsim model
============================  =========================================  ====================
``timm_vit``                  timm ``VisionTransformer``, DINOv2 hub      ``timm_vit``
``hf_vit``                    Hugging Face ``ViTModel``                   ``timm_vit``
``hf_dinov2``                 Hugging Face ``Dinov2Model``                ``timm_vit``
``torchvision_resnet``        torchvision ``resnet18/50/152``             BottleFit teachers
``efficientnet_pytorch``      efficientnet_pytorch ``EfficientNet``       ``efficientnet_lite``
``hf_bert``                   Hugging Face ``BertModel``                  :mod:`fedsim.models.bert`
============================  =========================================  ====================

Each layout knows a marker key (to detect it) and the keys it drops on purpose (a task
head, a pooler, a mask token). A checkpoint may hold its tensors under a prefix
(``backbone.``, ``vit.``, ``bert.``, ``module.``); :func:`convert` finds the prefix under
which the most converted keys fit the model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fedsim.pretrained.readers import Tensors
from fedsim.registry import Registry


@dataclass(frozen=True)
class Layout:
    """How one library names a model's tensors.

    Attributes
    ----------
    marker : str
        A regular expression some key of such a checkpoint matches (after its prefix).
    rename : callable
        ``tensors -> tensors`` in fedsim's names.
    drop : str
        A regular expression of keys the fedsim model has no use for (heads, poolers).
    """

    marker: str
    rename: Callable[[Tensors], Tensors]
    drop: str = r"^$"


LAYOUTS: Registry[Layout] = Registry("checkpoint layout")


def _identity(tensors: Tensors) -> Tensors:
    return dict(tensors)


def _rules(pairs: list[tuple[str, str]]) -> Callable[[Tensors], Tensors]:
    """Renaming by regular expressions (the first rule that matches a key wins)."""
    compiled = [(re.compile(a), b) for a, b in pairs]

    def rename(tensors: Tensors) -> Tensors:
        out: Tensors = {}
        for key, value in tensors.items():
            for pattern, repl in compiled:
                if pattern.fullmatch(key):
                    key = pattern.sub(repl, key)
                    break
            out[key] = value
        return out

    return rename


def _fuse_qkv(tensors: Tensors) -> Tensors:
    """``blocks.i.attn.{q,k,v}.*`` -> ``blocks.i.attn.qkv.*`` (concatenated along the output)."""
    out = dict(tensors)
    for key in [k for k in tensors if re.fullmatch(r"blocks\.\d+\.attn\.q\.(weight|bias)", k)]:
        stem, kind = key.rsplit(".q.", 1)
        parts = [f"{stem}.{p}.{kind}" for p in "qkv"]
        if all(p in out for p in parts):
            out[f"{stem}.qkv.{kind}"] = torch.cat([out.pop(p) for p in parts], dim=0)
    return out


_HF_EMBEDDINGS = [
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.layer\.(\d+)\.attention\.attention\.query\.(\w+)", r"blocks.\1.attn.q.\2"),
    (r"encoder\.layer\.(\d+)\.attention\.attention\.key\.(\w+)", r"blocks.\1.attn.k.\2"),
    (r"encoder\.layer\.(\d+)\.attention\.attention\.value\.(\w+)", r"blocks.\1.attn.v.\2"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(\w+)", r"blocks.\1.attn.proj.\2"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
]


def _onnx_positions(tensors: Tensors) -> Tensors:
    """An ONNX export of ``Dinov2Model`` keeps the position table as two anonymous tensors
    (the class token's ``[1, 1, D]`` and the patches' ``[1, N, D]``): join them."""
    if "embeddings.position_embeddings" in tensors or "embeddings.cls_token" not in tensors:
        return tensors
    dim = tensors["embeddings.cls_token"].shape[-1]
    anonymous = {k: v for k, v in tensors.items() if k.startswith("onnx::") and v.dim() == 3}
    cls = [k for k, v in anonymous.items() if v.shape == (1, 1, dim)]
    grid = [k for k, v in anonymous.items() if v.shape[0] == 1 and v.shape[2] == dim and v.shape[1] > 1]
    if len(cls) != 1 or len(grid) != 1:
        return tensors
    out = {k: v for k, v in tensors.items() if k not in (cls[0], grid[0])}
    out["embeddings.position_embeddings"] = torch.cat([tensors[cls[0]], tensors[grid[0]]], dim=1)
    return out


def _hf_dinov2(tensors: Tensors) -> Tensors:
    rules = _rules(
        [
            *_HF_EMBEDDINGS,
            (r"encoder\.layer\.(\d+)\.norm([12])\.(\w+)", r"blocks.\1.norm\2.\3"),
            (r"encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1", r"blocks.\1.ls\2.gamma"),
            (r"encoder\.layer\.(\d+)\.mlp\.(fc[12])\.(\w+)", r"blocks.\1.mlp.\2.\3"),
        ]
    )
    return _fuse_qkv(rules(_onnx_positions(tensors)))


def _hf_vit(tensors: Tensors) -> Tensors:
    rules = _rules(
        [
            *_HF_EMBEDDINGS,
            (r"encoder\.layer\.(\d+)\.layernorm_before\.(\w+)", r"blocks.\1.norm1.\2"),
            (r"encoder\.layer\.(\d+)\.layernorm_after\.(\w+)", r"blocks.\1.norm2.\2"),
            (r"encoder\.layer\.(\d+)\.intermediate\.dense\.(\w+)", r"blocks.\1.mlp.fc1.\2"),
            (r"encoder\.layer\.(\d+)\.output\.dense\.(\w+)", r"blocks.\1.mlp.fc2.\2"),
        ]
    )
    return _fuse_qkv(rules(tensors))


_VIT_DROP = r"(mask_token|head\..*|fc_norm\..*)"
LAYOUTS.register("timm_vit", summary="timm VisionTransformer / DINOv2 hub (blocks.N.attn.qkv)")(
    Layout(r"blocks\.0\.attn\.qkv\.weight", _identity, _VIT_DROP)
)
LAYOUTS.register("hf_dinov2", summary="Hugging Face Dinov2Model (encoder.layer.N.layer_scale1)")(
    Layout(r"encoder\.layer\.0\.layer_scale1\.lambda1", _hf_dinov2, r"embeddings\.mask_token")
)
LAYOUTS.register("hf_vit", summary="Hugging Face ViTModel (encoder.layer.N.layernorm_before)")(
    Layout(r"encoder\.layer\.0\.layernorm_before\.weight", _hf_vit, r"(pooler|classifier)\..*")
)
LAYOUTS.register("torchvision_resnet", summary="torchvision ResNet (layer1.0.conv1, fc)")(
    Layout(r"layer1\.0\.conv1\.weight", _identity, r"fc\..*")
)
LAYOUTS.register("efficientnet_pytorch", summary="efficientnet_pytorch EfficientNet(-Lite) (_blocks.N)")(
    Layout(r"_blocks\.0\._depthwise_conv\.weight", _identity, r"_fc\..*")
)
LAYOUTS.register("hf_bert", summary="Hugging Face BertModel (encoder.layer.N.attention.self.query)")(
    Layout(
        r"encoder\.layer\.0\.attention\.self\.query\.weight",
        _identity,
        r"(embeddings\.position_ids|pooler\..*|cls\..*)",
    )
)
