"""BottleFit: inject a narrow bottleneck into a ResNet's early layers for split computing.

Y. Matsubara, D. Callegaro, S. Singh, M. Levorato, F. Restuccia, "BottleFit: Learning
Compressed Representations in Deep Neural Networks for Effective and Efficient Split
Computing", IEEE WoWMoM 2022 (reference code: sc2bench / torchdistill, ``Bottleneck4ResNet152``).

The method in full: docs/algorithms/bottlefit.md.

The stem through ``split`` of a teacher ResNet is replaced by

* an **encoder** (the head, run on the device): a fresh copy of the teacher's stem geometry
  (conv, BN, ReLU, max pool), then BN, ReLU, and a 2x2 conv to ``C`` channels (the
  bottleneck, no bias, no activation: its output is what is quantised and sent);
* a **decoder** (first part of the tail, on the server): BN, ReLU, conv 2x2 pad 1 C->D, BN,
  ReLU, conv 2x2 pad 1 D->D, BN, ReLU, conv 2x2 D->D, BN, ReLU, conv 2x2 D->D, avg pool 2x2
  stride 1, where D is the channel count of the teacher's output at ``split``.

The teacher's stages after the split are deep-copied into the student (``kept``).

**Matching 29x29 to 28x28 (ResNet-152, split layer2, 224 px), as the authors do.** The
stem leaves 56x56; the bottleneck conv (2x2, stride 2, pad 1) gives floor((56 + 2 - 2)/2) + 1
= 29. Each 2x2 stride-1 conv changes the size by 2*pad - 1: the two padded convs give 30, 31;
the two unpadded ones 30, 29; the final 2x2 stride-1 average pool 28 = layer2's output size.
So the decoder shrinks by one pixel overall, and the bottleneck is always one pixel larger
than the boundary it replaces. The same arithmetic is used for every split:

* ``layer1`` (no stride after the stem): bottleneck conv 2x2 stride 1 pad 1, S -> S + 1;
* ``layer2``: 2x2 stride 2 pad 1, S -> S/2 + 1 (the reference);
* ``layer3`` / ``layer4``: one / two extra 3x3 stride-2 conv + BN + ReLU blocks (stem width)
  before the 2x2 stride-2 bottleneck conv.

For ``small_resnet`` (3x3 stride-1 stem, optional stride-2 max pool) the same pattern holds
with the stem's width instead of 64 and D from the teacher's stage widths. The decoder's
output shape is checked against the teacher's by a dummy forward at ``input_size``
(odd stem outputs, for example, do not fit and raise ``ValueError``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fedsim.edge.resnet import STAGE_NAMES, ResNet
from fedsim.errors import UserError

SPLITS: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")


class BottleneckError(UserError, ValueError):
    """A bottleneck that cannot be injected as asked (bad split, channels or input size)."""


class SplitClassifier(nn.Module):
    """A ResNet whose early layers are an encoder-bottleneck-decoder; ``forward = tail(head(x))``.

    Parameters
    ----------
    encoder : nn.Module
        The head (on the device); its output is the bottleneck tensor [B, C, h, w].
    decoder : nn.Module
        Restores the teacher's tensor shape at ``split``.
    kept : list of nn.Module
        The teacher's remaining stages after ``split`` (copies), ending with ``pool_fc``.
    split : str
        The teacher stage whose output the decoder replaces.
    bottleneck_channels : int
        C, the encoder's output channels.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        kept: list[nn.Module],
        split: str,
        bottleneck_channels: int,
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.kept = nn.ModuleList(kept)
        self.split = split
        self.bottleneck_channels = bottleneck_channels

    @property
    def head(self) -> nn.Module:
        """The device side: the encoder."""
        return self.encoder

    @property
    def tail(self) -> nn.Module:
        """The server side: decoder then kept stages.

        A new ``nn.Sequential`` on each access, sharing this model's modules (no copies). Its
        own ``training`` flag is set to this model's, without touching the submodules, so that
        tools that save and restore the mode (``torch.onnx.export``) restore the right one.
        """
        seq = nn.Sequential(self.decoder, *self.kept)
        seq.training = self.training
        return seq

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.decoder(self.encoder(x))
        for stage in self.kept:
            x = stage(x)
        return x

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs for stage-1 distillation: the decoder's, then after each kept stage.

        Parameters
        ----------
        x : torch.Tensor
            Input images [B, in_channels, H, W].

        Returns
        -------
        list of torch.Tensor
            ``1 + len(kept)`` tensors, shaped like :func:`teacher_stages` at the same split
            (the last one the logits).
        """
        z = self.decoder(self.encoder(x))
        outs = [z]
        for stage in self.kept:
            z = stage(z)
            outs.append(z)
        return outs

    def teacher_stages(self, teacher: ResNet, x: torch.Tensor) -> list[torch.Tensor]:
        """:func:`teacher_stages` at this model's split."""
        return teacher_stages(teacher, x, self.split)


def teacher_stages(teacher: ResNet, x: torch.Tensor, split: str = "layer2") -> list[torch.Tensor]:
    """The teacher's outputs at the boundaries :meth:`SplitClassifier.forward_stages` returns.

    Parameters
    ----------
    teacher : ResNet
        The unmodified model (its mode and gradients are the caller's business).
    x : torch.Tensor
        Input images.
    split : str
        The stage the student's decoder replaces (``SplitClassifier.split``).

    Returns
    -------
    list of torch.Tensor
        The output of ``split``, then the output after each later stage (the last the logits).
    """
    _check_split(split)
    outs: list[torch.Tensor] = []
    for name, stage in teacher.stages():
        x = stage(x)
        if outs or name == split:
            outs.append(x)
    return outs


def inject_bottleneck(
    teacher: ResNet, split: str = "layer2", channels: int = 4, input_size: int = 224
) -> SplitClassifier:
    """Replace ``teacher``'s stem through ``split`` by an encoder, a C-channel bottleneck and a decoder.

    Parameters
    ----------
    teacher : ResNet
        The model to split; not modified (its later stages are deep-copied).
    split : str
        ``layer1`` .. ``layer4``: the last teacher stage the encoder and decoder replace.
    channels : int
        Bottleneck channels C.
    input_size : int
        Square input side used to check, by a dummy forward, that the decoder's output has the
        teacher's shape at ``split``.

    Returns
    -------
    SplitClassifier
        Freshly initialised encoder and decoder; kept stages copied from the teacher.

    Raises
    ------
    BottleneckError
        (a ``ValueError`` and a ``UserError``) for an unknown split, channels < 1, or an input
        size whose decoder output does not match the teacher's boundary shape.
    """
    _check_split(split)
    if channels < 1:
        raise BottleneckError(f"bottleneck channels must be >= 1, got {channels}")
    encoder = _encoder(teacher, split, channels)
    decoder = _decoder(channels, teacher.stage_channels()[split])
    names = [name for name, _ in teacher.stages()]
    kept = [copy.deepcopy(stage) for _, stage in teacher.stages()[names.index(split) + 1 :]]
    model = SplitClassifier(encoder, decoder, kept, split, channels)
    _check_shapes(teacher, model, input_size)
    return model


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise BottleneckError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")


def _pair(v: tuple[int, ...]) -> tuple[int, int]:
    """A 2-D convolution's (height, width) setting as a pair."""
    return (v[0], v[1])


def _encoder(teacher: ResNet, split: str, channels: int) -> nn.Sequential:
    stem = teacher.conv1
    width = stem.out_channels
    layers: list[nn.Module] = [
        nn.Conv2d(
            stem.in_channels,
            width,
            kernel_size=_pair(stem.kernel_size),
            stride=_pair(stem.stride),
            padding=stem.padding if isinstance(stem.padding, str) else _pair(stem.padding),
            bias=False,
        ),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        copy.deepcopy(teacher.maxpool),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]
    depth = SPLITS.index(split)  # stride-2 stages removed after the stem: 0, 1, 2, 3
    for _ in range(depth - 1):
        layers += [
            nn.Conv2d(width, width, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
    stride = 1 if depth == 0 else 2
    layers.append(nn.Conv2d(width, channels, kernel_size=2, stride=stride, padding=1, bias=False))
    return nn.Sequential(*layers)


def _decoder(channels: int, out_channels: int) -> nn.Sequential:
    d = out_channels
    return nn.Sequential(
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, d, kernel_size=2, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(d),
        nn.ReLU(inplace=True),
        nn.Conv2d(d, d, kernel_size=2, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(d),
        nn.ReLU(inplace=True),
        nn.Conv2d(d, d, kernel_size=2, stride=1, bias=False),
        nn.BatchNorm2d(d),
        nn.ReLU(inplace=True),
        nn.Conv2d(d, d, kernel_size=2, stride=1, bias=False),
        nn.AvgPool2d(kernel_size=2, stride=1),
    )


def _meta_output_shape(module: nn.Module, shape: tuple[int, ...]) -> torch.Size:
    """Output shape of ``module`` (in eval mode) on the meta device: no compute, nothing modified."""
    tensors = {k: torch.empty_like(v, device="meta") for k, v in module.named_parameters()}
    tensors.update({k: torch.empty_like(v, device="meta") for k, v in module.named_buffers()})
    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = torch.func.functional_call(module, tensors, (torch.empty(shape, device="meta"),))
    finally:
        module.train(training)
    return out.shape


def _check_shapes(teacher: ResNet, model: SplitClassifier, input_size: int) -> None:
    x = (1, teacher.conv1.in_channels, input_size, input_size)
    removed = [stage for _, stage in teacher.stages()[: STAGE_NAMES.index(model.split) + 1]]
    want = _meta_output_shape(nn.Sequential(*removed), x)
    got = _meta_output_shape(nn.Sequential(model.encoder, model.decoder), x)
    if got != want:
        raise BottleneckError(
            f"decoder output {tuple(got[1:])} does not match the teacher's {model.split} output "
            f"{tuple(want[1:])} at input size {input_size}; use an input size whose stem output "
            "is even"
        )
