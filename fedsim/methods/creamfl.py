"""CreamFL's maths (Yu et al., ICLR 2023, https://arxiv.org/abs/2302.08888).

The method in full: docs/algorithms/creamfl.md.

All embeddings are L2-normalised rows. P is the public set, d the embedding dimension.

- Contrastive image-text loss (server on public pairs, image-text clients on private
  pairs): the symmetric InfoNCE
  ``L = (CE(I T^T / tau_c, diag) + CE(T I^T / tau_c, diag)) / 2`` over a batch. The
  authors use PCME's soft contrastive loss; InfoNCE is the documented substitute.
- Inter-modal regulariser (client, public item j, local embedding i_j):
  ``L_inter = -log(exp(i_j . t_j^g / tau) / sum_{k in P} exp(i_j . t_k^g / tau))``.
- Intra-modal regulariser: ``L_intra = -log(exp(i_j . i_j^g / tau) /
  (exp(i_j . i_j^g / tau) + exp(i_j . i_j^prev / tau)))``, i^prev from the client's own
  model frozen at round start. tau = 0.5, both weighted by lambda = 0.5.
- Global-local cross-modal ensemble: ``s_j^c = log_softmax_k(i_j^c . t_k^g)[j]``,
  ``w_j^c = softmax_c(s_j^c)``, ``I_bar_j = sum_c w_j^c i_j^c`` (text symmetric, scored
  against the global image embeddings). Computed in chunks of public items: at most
  ``C x chunk x |P|`` scores at once, never ``|P| x |P|`` per client.
- Distillation: ``kd_weight * (MSE(f_s^I(x_j), I_bar_j) + MSE(f_s^T(c_j), T_bar_j))``, MSE
  the mean over items *and* dimensions (PyTorch's ``nn.MSELoss()``, as in the authors'
  code), so ``d`` times smaller than a squared distance per item; kd_weight = 0.3.
- Retrieval: image-to-text and text-to-image Recall@K (K = 1, 5, 10) on a paired test
  set whose i-th image matches its i-th caption; rsum is the sum of the six recalls (in
  percent, so at most 600).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from fedsim.config import Params, Scenario
from fedsim.data.captions import vocabulary
from fedsim.data.paired import Modality, PairedData, PairedSet, build_paired
from fedsim.devices import module_device
from fedsim.errors import UserError
from fedsim.memo import Memo, memo
from fedsim.models.multimodal import MultimodalNet, MultimodalParams, build_multimodal
from fedsim.training import outputs
from fedsim.workspace import federated_data

RECALL_KS = (1, 5, 10)


def info_nce(
    images: torch.Tensor, texts: torch.Tensor, tau: float, reduction: Literal["mean", "sum"] = "mean"
) -> torch.Tensor:
    """Symmetric InfoNCE of matched rows ``images[i] <-> texts[i]`` at temperature ``tau``.

    ``reduction="sum"`` sums over the batch's rows instead of averaging (the authors' server
    loss, PCME's soft contrastive loss, is a sum).
    """
    logits = images @ texts.T / tau
    target = torch.arange(len(images), device=images.device)
    ce = nn.functional.cross_entropy
    return (ce(logits, target, reduction=reduction) + ce(logits.T, target, reduction=reduction)) / 2


def cosine_lr(base: float, server_round: int, rounds: int) -> float:
    """``base * (1 + cos(pi * (round - 1) / rounds)) / 2``: the server's rate in round ``server_round``."""
    return base * 0.5 * (1.0 + math.cos(math.pi * (server_round - 1) / max(rounds, 1)))


def shifted(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image translated by its own random offset of at most ``max_shift`` pixels per axis
    (edges replicated): the augmentation of the distillation's public images."""
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    padded = nn.functional.pad(images, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    return torch.stack([padded[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(offsets.tolist())])


def inter_modal_loss(
    local: torch.Tensor, global_other: torch.Tensor, index: torch.Tensor, tau: float
) -> torch.Tensor:
    """Mean L_inter of local embeddings ``local[b]`` of public items ``index[b]``.

    Parameters
    ----------
    local : torch.Tensor
        ``[B, d]`` client embeddings of public items ``index``.
    global_other : torch.Tensor
        ``[|P|, d]`` global embeddings of the *other* modality of the whole public set.
    index : torch.Tensor
        ``[B]`` public indices of the batch (the positives).
    tau : float
        Temperature.
    """
    return nn.functional.cross_entropy(local @ global_other.T / tau, index.to(local.device))


def intra_modal_loss(
    local: torch.Tensor, global_same: torch.Tensor, previous: torch.Tensor, tau: float
) -> torch.Tensor:
    """Mean L_intra: positive the global embedding, negative the previous-round local one (rows aligned)."""
    logits = torch.stack([(local * global_same).sum(1), (local * previous).sum(1)], dim=1) / tau
    return nn.functional.cross_entropy(logits, torch.zeros(len(local), dtype=torch.long, device=local.device))


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows and dimensions of ``(pred - target)^2`` (``nn.MSELoss()``)."""
    return (pred - target).pow(2).mean()


def ensemble_scores(local: torch.Tensor, global_other: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """s_j^c = log_softmax_k(local[c, j] . global_other[k])[j]  as ``[C, |P|]``, in chunks of j.

    Parameters
    ----------
    local : torch.Tensor
        ``[C, |P|, d]``: each client's embeddings of the public set in one modality.
    global_other : torch.Tensor
        ``[|P|, d]``: the global embeddings of the other modality.
    chunk : int
        Public items scored at once: the largest intermediate is ``[C, chunk, |P|]``.
    """
    n = local.shape[1]
    out = torch.empty(local.shape[0], n, dtype=local.dtype, device=local.device)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        logp = torch.log_softmax(local[:, start:stop] @ global_other.T, dim=-1)  # [C, chunk, |P|]
        rows = torch.arange(stop - start, device=local.device)
        out[:, start:stop] = logp[:, rows, rows + start]
    return out


def ensemble_weights(local: torch.Tensor, global_other: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """w_j^c = softmax over clients c of s_j^c  (``[C, |P|]``, each column sums to 1)."""
    return torch.softmax(ensemble_scores(local, global_other, chunk), dim=0)


def mean_weights(local: torch.Tensor) -> torch.Tensor:
    """Uniform weights 1/C (the mean-aggregation ablation)."""
    c, n = local.shape[:2]
    return torch.full((c, n), 1.0 / c, dtype=local.dtype, device=local.device)


def aggregate(local: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """I_bar_j = sum_c w_j^c local[c, j]  (``[|P|, d]``)."""
    return (weights.unsqueeze(-1) * local).sum(0)


AGGREGATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    "ensemble": ensemble_weights,
    "mean": lambda local, _global, _chunk: mean_weights(local),
}


def recall_at_k(similarity: torch.Tensor, ks: tuple[int, ...] = RECALL_KS) -> dict[str, float]:
    """Image-to-text and text-to-image Recall@K (in percent) and their sum ``rsum``.

    ``similarity[i, t]`` scores image i against caption t; the match of image i is caption
    i. A query counts as found at K when fewer than K wrong items score strictly higher
    than its match (ties are in the match's favour).
    """
    pos = similarity.diagonal()
    rank_i2t = (similarity > pos[:, None]).sum(1)  # wrong captions above each image's match
    rank_t2i = (similarity > pos[None, :]).sum(0)  # wrong images above each caption's match
    out: dict[str, float] = {}
    for name, rank in (("i2t", rank_i2t), ("t2i", rank_t2i)):
        for k in ks:
            out[f"{name}_r{k}"] = 100.0 * float((rank < k).float().mean())
    out["rsum"] = sum(out.values())
    return out


def distillation_diagnostics(
    global_reps: Mapping[str, torch.Tensor],
    local: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
) -> dict[str, float]:
    """How useful the distillation targets are to the server, on the public set.

    - ``server-public-r1-{i2t,t2i}``: Recall@1 of the server's own global representations;
    - ``{m}-target-r1``: Recall@1 of the aggregated targets of modality m against the
      server's global representations of the other modality (image targets retrieve
      captions, text targets retrieve images): below the server's own value, distilling
      towards them moves the server away from what it retrieves well;
    - ``{m}-client-cos``: mean cosine between a client's and the server's embedding of
      the same public item (1: the client lives in the server's space).

    ``local[m]`` is ``[C, |P|, d]``; ``targets[m]`` is ``[|P|, d]`` (not normalised).
    """
    own = recall_at_k(global_reps["image"] @ global_reps["text"].T, ks=(1,))
    out = {"server-public-r1-i2t": own["i2t_r1"], "server-public-r1-t2i": own["t2i_r1"]}
    for m, target in targets.items():
        if m == "image":
            out["image-target-r1"] = recall_at_k(target @ global_reps["text"].T, ks=(1,))["i2t_r1"]
        else:
            out["text-target-r1"] = recall_at_k(global_reps["image"] @ target.T, ks=(1,))["t2i_r1"]
        out[f"{m}-client-cos"] = float((local[m] * global_reps[m]).sum(-1).mean())
    return out


# ----------------------------------------------------------------------------- what both halves share

#: Names of the representation arrays in messages (each ``[|P|, d]`` float32).
MODALITY_KEYS: tuple[str, str] = ("image", "text")
#: Record names: the server's global representations, a client's local ones.
GLOBAL_RECORD, LOCAL_RECORD = "global", "local"


class CreamFLParams(Params):
    """CreamFL's parameters (authors' defaults where the paper gives them)."""

    public_size: int = Field(1000, ge=8, le=100_000, description="|P|: public image-caption pairs")
    modalities: tuple[Literal["image", "text", "image_text"], ...] = Field(
        ("image", "text", "image_text"),
        min_length=1,
        description="client modalities, by partition id in turn",
    )
    text_label: Literal["shape", "colour", "size", "position", "background", "texture"] = Field(
        "colour", description="caption attribute text-only clients classify"
    )
    tau: float = Field(0.5, gt=0, description="temperature of the inter/intra regularisers")
    reg_weight: float = Field(0.5, ge=0, description="lambda: weight of each regulariser")
    inter: bool = Field(True, description="inter-modal regulariser on clients")
    intra: bool = Field(True, description="intra-modal regulariser on clients")
    kd_weight: float = Field(0.3, ge=0, description="weight of the server's distillation")
    aggregation: Literal["ensemble", "mean"] = Field(
        "ensemble", description="how client representations merge"
    )
    public_only: bool = Field(False, description="baseline: server trained on public data only")
    server_warmup_rounds: int = Field(
        0, ge=0, description="rounds the server trains on public data alone before clients take part"
    )
    client_warmup_epochs: int = Field(
        0, ge=0, description="extra private epochs in a client's first round (a pretrained start)"
    )
    contrastive_tau: float = Field(0.1, gt=0, description="temperature of the InfoNCE (server, pair clients)")
    server_lr: float = Field(2e-4, gt=0, description="Adam learning rate of the server (authors' 2e-4)")
    distil_optimizer: Literal["shared", "own"] = Field(
        "shared", description="the distillation's Adam: the public epochs' (authors' code), or its own"
    )
    # The authors' code (FLAIR-THU/CreamFL) where the paper is silent; each the default.
    local_schedule: Literal["interleaved", "private_then_public"] = Field(
        "interleaved",
        description="interleaved: (private epoch + regularised public pass) x local_epochs (authors' "
        "code); private_then_public: every private epoch, then one public pass",
    )
    client_optimizer: Literal["kept", "fresh"] = Field(
        "kept", description="a client's optimizer kept across rounds in its state (authors' code), or new"
    )
    pair_intra: Literal["mean", "sum"] = Field(
        "mean", description="image-text clients: intra-modal term averaged (authors) or summed (modalities)"
    )
    server_loss_reduction: Literal["sum", "mean"] = Field(
        "sum", description="server's public InfoNCE summed over the batch (as PCME's loss is) or averaged"
    )
    server_schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="server learning rate: cosine decay over the rounds (authors) or constant"
    )
    server_grad_clip: float | None = Field(
        2.0, gt=0, description="gradient-norm clipping of the server's steps (authors' 2); None: none"
    )
    kd_per_client_type: bool = Field(
        True, description="kd_weight added once per client type that replied (authors' code: 0.6 with two)"
    )
    kd_shift: int = Field(
        2, ge=0, le=8, description="distillation on public images shifted by up to this many pixels (0: none)"
    )
    server_batch_size: int = Field(64, ge=2)
    chunk_size: int = Field(256, ge=1, description="public items per chunk of the ensemble scores")


def params_of(scenario: Scenario) -> CreamFLParams:
    """The scenario's validated CreamFL parameters."""
    return CreamFLParams.model_validate(scenario.algorithm.params)


def model_params(scenario: Scenario) -> MultimodalParams:
    """The scenario's encoder parameters (its ``model`` section must be ``multimodal``)."""
    if scenario.model.name != "multimodal":
        raise UserError(f"algorithm 'creamfl' needs model.name 'multimodal', got {scenario.model.name!r}")
    return MultimodalParams.model_validate(scenario.model.params)


_PAIRED: Memo[PairedData] = memo("creamfl.paired", 4)  # key: scenario JSON


def _paired(scenario: Scenario) -> PairedData:
    p = params_of(scenario)
    return build_paired(federated_data(scenario), p.public_size, scenario.seed, p.modalities, p.text_label)


def paired_of(scenario: Scenario) -> PairedData:
    """The scenario's public, test and private paired sets (built once per process)."""
    return _PAIRED.get(scenario.to_json(), lambda: _paired(scenario))


def new_net(scenario: Scenario, modality: Modality, server: bool, seed: int) -> MultimodalNet:
    """A freshly initialised network, deterministic for ``seed`` (the global RNG is untouched)."""
    data = paired_of(scenario)
    shape = data.public.images.shape[1:]
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return build_multimodal(
            model_params(scenario),
            (int(shape[0]), int(shape[1]), int(shape[2])),
            len(vocabulary()),
            image=modality != "text",
            text=modality != "image",
            server=server,
            image_classes=0 if server else federated_data(scenario).dataset.num_classes,
            text_classes=0 if server else data.num_text_classes,
        )


@torch.no_grad()
def encode_set(
    net: MultimodalNet, modality: str, inputs: torch.Tensor, batch_size: int = 500
) -> torch.Tensor:
    """Embeddings ``[N, d]`` of all ``inputs`` by the encoder of ``modality`` (eval mode), computed on
    the net's device, returned on the CPU."""
    net.eval()
    return outputs(partial(net.encode, modality), inputs, module_device(net), batch_size)


def public_inputs(public: PairedSet, modality: str) -> torch.Tensor:
    """The public set's images or token ids."""
    return public.images if modality == "image" else public.tokens
