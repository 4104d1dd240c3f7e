"""pFedPG's maths (Yang et al., "Efficient model personalization in federated learning
via client-specific prompt generation", ICCV 2023; docs/algorithms/pfedpg.md).

Prompt generator (server). With shared base prompts P_base (K x l) and a descriptor
d_n of client n,

    P_n = G(P_base, d_n) = P_base + softmax((d_n W_Q)(P_base W_K)^T / sqrt(l_k)) (P_base W_V) W_O.

Descriptor shape (the paper leaves it open): d_n is K x l, one descriptor token per
prompt. Each prompt token k of client n then gets its own query and so its own mixture
of the base prompts; with a single token (1 x l) every prompt of a client would receive
the same offset, i.e. only a shift of P_base along one direction.

Initialisation (also left open by the paper). By default W_Q, W_K, W_V, W_O ~ U(+-1/sqrt(l))
and d_n ~ N(0, 1); with P_base ~ U(+-b) (VPT's small bound) the attention logits then have a
standard deviation of a few hundredths, the softmax is nearly uniform whatever d_n is, and
d_n hardly receives a gradient. ``logit_std`` s instead draws W_Q ~ N(0, 1/l) (so d_n W_Q
has unit entries) and W_K ~ N(0, 3 s^2 / (l b^2)) (so P_base W_K has entries of std s):
the logits start with std ~ s and each client's descriptors pick their own mixture.

Update. The client returns Delta_n = P_tilde_n - P_n. Treating -Delta_n as dL_n/dP_n,
the generator's parameters theta (P_base, every d_n, W_Q, W_K, W_V, W_O) take one step

    theta <- theta - alpha J_n^T (P_n - P_tilde_n)     (J_n = dP_n/dtheta, alpha = 0.001),

a vector-Jacobian product computed by back-propagating -Delta_n through G. d_n only
appears in P_n, so only client n moves it. Updates of all clients of a round are summed
into one step. The P_base-only ablation sends P_base to every client and applies the same
rule to P_base alone (J = I).

The frozen backbone F* every client shares: :mod:`fedsim.methods.backbone`.

Variants. Five algorithms share this code and differ only in the prompts a client
receives, the server's update and whether the client tunes the prompts
(:data:`VARIANTS`); both halves read the variant of a run from its algorithm name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from flwr.app import ArrayRecord
from pydantic import Field, field_validator
from torch import nn

from fedsim.config import Params, Scenario
from fedsim.data.domains import DomainsParams, client_style, styled
from fedsim.errors import UserError
from fedsim.memo import Memo, memo
from fedsim.methods.backbone import Backbone, PretrainRecipe, cached_backbone, file_sha256, public_indices
from fedsim.models import MODELS
from fedsim.models.vit import PromptViT
from fedsim.records import array_view, to_array
from fedsim.workspace import ClientData, federated_data, new_model


def vpt_init_bound(in_channels: int, patch_size: int, dim: int) -> float:
    """VPT's uniform prompt initialisation bound sqrt(6 / (C p^2 + dim)) (Xavier on the patch)."""
    return float(np.sqrt(6.0 / (in_channels * patch_size * patch_size + dim)))


class PromptGenerator(nn.Module):
    """G: base prompts, one K x l descriptor per client, single-head attention projections.

    Parameters
    ----------
    num_clients : int
        N, the number of descriptors.
    num_prompts : int
        K prompt tokens.
    dim : int
        l, the token width of the backbone.
    init_bound : float
        P_base ~ U(-b, b) (VPT's initialisation).
    seed : int
        Seed of every initial value.
    logit_std : float, optional
        Standard deviation of the attention logits at initialisation (module docstring);
        None: uniform W_Q and W_K like W_V and W_O (near-uniform attention).
    """

    def __init__(
        self,
        num_clients: int,
        num_prompts: int,
        dim: int,
        init_bound: float,
        seed: int,
        logit_std: float | None = None,
    ) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        self.base = nn.Parameter(
            torch.empty(num_prompts, dim).uniform_(-init_bound, init_bound, generator=gen)
        )
        self.descriptors = nn.Parameter(torch.randn(num_clients, num_prompts, dim, generator=gen))
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)
        bound = 1.0 / dim**0.5
        with torch.no_grad():
            for lin in (self.q, self.k, self.v, self.o):
                lin.weight.uniform_(-bound, bound, generator=gen)
            if logit_std is not None:
                self.q.weight.normal_(0.0, 1.0 / dim**0.5, generator=gen)
                key_std = logit_std * 3.0**0.5 / (dim**0.5 * init_bound)
                self.k.weight.normal_(0.0, key_std, generator=gen)

    def forward(self, client: int) -> torch.Tensor:
        """P_n = P_base + Attn(d_n -> P_base) W_O, ``[K, l]``."""
        q = self.q(self.descriptors[client])
        k = self.k(self.base)
        attn = torch.softmax(q @ k.T / k.shape[1] ** 0.5, dim=-1)
        return self.base + self.o(attn @ self.v(self.base))


def generator_step(
    gen: PromptGenerator, deltas: Mapping[int, torch.Tensor], lr: float, base_only: bool = False
) -> None:
    """theta <- theta - lr * sum_n J_n^T (P_n - P_tilde_n), with P_tilde_n - P_n = deltas[n].

    Plain SGD (the paper's rule). ``base_only``: P_n = P_base for every n (the ablation),
    so only P_base moves.
    """
    gen.zero_grad(set_to_none=True)
    for client, delta in deltas.items():
        prompts = gen.base if base_only else gen(client)
        (prompts * (-delta.to(prompts.dtype))).sum().backward()  # VJP of g = -Delta_n
    with torch.no_grad():
        for p in gen.parameters():
            if p.grad is not None:
                p.sub_(lr * p.grad)
    gen.zero_grad(set_to_none=True)


# ----------------------------------------------------------------------------- what both halves share

#: Names of the records carrying prompts (server to client) and Delta_n (client to server).
PROMPTS_KEY = "prompts"
DELTA_KEY = "delta"


class PromptParams(Params):
    """Parameters shared by the prompt algorithms (pfedpg, pfedpg_base, fedvpt, vpt_local, vpt_head)."""

    num_prompts: int = Field(8, ge=1, le=256, description="K prompt tokens (VPT-shallow)")
    public_fraction: float = Field(
        0.3, gt=0, lt=1, description="share of the training split held out for pretraining"
    )
    backbone: Path | None = Field(
        None, description="a checkpoint of 'fedsim pretrain'; None: cached pretraining"
    )
    pretrain_epochs: int = Field(200, ge=1, description="epochs of backbone pretraining (Adam)")
    pretrain_lr: float = Field(3e-3, gt=0, description="Adam learning rate of the pretraining")

    @field_validator("backbone")
    @classmethod
    def _exists(cls, value: Path | None) -> Path | None:
        """Checked before anything runs; stored absolute (runtimes may run elsewhere)."""
        if value is None:
            return None
        path = value.expanduser().absolute()
        if not path.is_file():
            raise ValueError(f"{path} does not exist; expected a file written by 'fedsim pretrain'")
        return path


class PFedPGParams(PromptParams):
    """pFedPG's parameters (authors' generator learning rate)."""

    generator_lr: float | None = Field(
        None,
        gt=0,
        description="alpha: SGD step of the generator's VJP update; None: 1/N for the N clients of "
        "a round (P_base then moves by their mean Delta_n, as FedVPT's prompts do); the authors' 0.001",
    )
    attention_logit_std: float | None = Field(
        None, gt=0, description="std of G's attention logits at init (None: near-uniform attention)"
    )


#: What a client of a variant receives: G(P_base, d_n), P_base, the shared P, or nothing.
Sends = Literal["generated", "base", "global", "none"]


@dataclass(frozen=True)
class Variant:
    """One prompt algorithm: the prompts a client receives and whether it tunes them.

    The server's update follows from ``sends``: a VJP step of the generator (``generated``),
    the same step on P_base alone (``base``), FedAvg of the prompts (``global``), none.
    """

    name: str
    sends: Sends
    tune_prompts: bool
    params: type[PromptParams]
    summary: str


_PFEDPG = "client-specific prompts from a server generator (Yang et al. 2023)"
_VARIANTS = (
    Variant("pfedpg", "generated", True, PFedPGParams, _PFEDPG),
    Variant(
        "pfedpg_base", "base", True, PFedPGParams, "pFedPG ablation: P_base only, generator output unused"
    ),
    Variant("fedvpt", "global", True, PromptParams, "visual prompts averaged with FedAvg, local heads"),
    Variant(
        "vpt_local", "none", True, PromptParams, "visual prompts and heads tuned locally, no communication"
    ),
    Variant("vpt_head", "none", False, PromptParams, "control: local heads only, prompts never tuned"),
)
#: The five prompt algorithms, by name.
VARIANTS: dict[str, Variant] = {v.name: v for v in _VARIANTS}


def params_of(scenario: Scenario) -> PromptParams:
    """The scenario's validated prompt parameters (the common subset)."""
    values = {k: v for k, v in scenario.algorithm.params.items() if k in PromptParams.model_fields}
    return PromptParams.model_validate(values)


#: The models whose encoder takes prompts.
PROMPT_MODELS = ("vit", "timm_vit")


def check_model(scenario: Scenario) -> None:
    """The prompt algorithms need a prompt-taking ViT."""
    if scenario.model.name not in PROMPT_MODELS:
        raise UserError(
            f"algorithm {scenario.algorithm.name!r} needs a prompt-taking ViT as model.name "
            f"({' or '.join(map(repr, PROMPT_MODELS))}), got {scenario.model.name!r}"
        )


def public_split(scenario: Scenario) -> np.ndarray:
    """Indices (into the dataset's training split) of the public pretraining split."""
    ds = federated_data(scenario).dataset
    return public_indices(ds.y_train.numpy(), params_of(scenario).public_fraction, scenario.seed)


def recipe_of(scenario: Scenario) -> PretrainRecipe:
    """The pretraining recipe of the scenario."""
    p = params_of(scenario)
    return PretrainRecipe(epochs=p.pretrain_epochs, lr=p.pretrain_lr)


def pretrain_backbone(scenario: Scenario) -> Backbone:
    """The encoder pretrained on the scenario's public split (from the cache when it is there)."""
    check_model(scenario)
    ds = federated_data(scenario).dataset
    public = public_split(scenario)
    idx = torch.from_numpy(public)
    desc = {
        "model": scenario.model.name,
        "params": MODELS.params_of(scenario.model.name, scenario.model.params).model_dump(),
        "input_shape": ds.input_shape,
        "classes": ds.num_classes,
    }
    return cached_backbone(
        lambda: new_model(scenario),
        ds.train.rows(public),
        ds.y_train[idx],
        desc,
        recipe_of(scenario),
        scenario.seed,
    )


def pretrain_command(scenario: Scenario, out: Path | None) -> str:
    """``fedsim pretrain``: pretrain (or find) the backbone, copy it to ``out``; the line to print."""
    import shutil

    if scenario.model.pretrained is not None:
        raise UserError(
            f"model.pretrained ({scenario.model.pretrained}) is the backbone of this scenario; "
            "there is nothing to pretrain"
        )
    backbone = pretrain_backbone(scenario)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(backbone.path, out)
    how = "pretrained" if backbone.pretrained_here else "found in the cache"
    return (
        f"backbone {how}: {out or backbone.path} sha256 {backbone.sha256}; "
        f"use it with --set algorithm.backbone={out or backbone.path}"
    )


def load_backbone(scenario: Scenario) -> Backbone:
    """The frozen encoder's weights: ``model.pretrained``, the user's checkpoint of
    ``fedsim pretrain``, or pretrained here and cached."""
    check_model(scenario)
    if scenario.model.pretrained is not None:
        from fedsim.pretrained import resolve

        path = resolve(scenario.model.pretrained)
        return Backbone(new_model(scenario).features.state_dict(), path, file_sha256(path), False)
    p = params_of(scenario)
    if p.backbone is not None:
        path = p.backbone
        return Backbone(torch.load(path, weights_only=True), path, file_sha256(path), False)
    return pretrain_backbone(scenario)


_BACKBONES: Memo[Backbone] = memo("pfedpg.backbone", 8)  # key: scenario JSON
_ENCODERS: Memo[PromptViT] = memo("pfedpg.encoder", 8)  # key: scenario JSON
_CLIENT_DATA: Memo[ClientData] = memo("pfedpg.client_data", 4096)  # key: (scenario JSON, partition id)


def backbone_of(scenario: Scenario) -> Backbone:
    """:func:`load_backbone`, once per process."""
    return _BACKBONES.get(scenario.to_json(), lambda: load_backbone(scenario))


def _encoder(scenario: Scenario) -> PromptViT:
    enc = new_model(scenario).features
    if not isinstance(enc, PromptViT):
        raise UserError(f"algorithm {scenario.algorithm.name!r} needs a prompt-taking ViT encoder")
    try:
        enc.load_state_dict(backbone_of(scenario).state)
    except RuntimeError as exc:
        raise UserError(f"algorithm.backbone does not fit model {scenario.model.params}: {exc}") from None
    enc.requires_grad_(False)
    return enc.eval()


def frozen_encoder(scenario: Scenario) -> PromptViT:
    """The process's frozen ViT encoder F* (no parameter requires grad; never updated)."""
    return _ENCODERS.get(scenario.to_json(), lambda: _encoder(scenario))


def _client_data(scenario: Scenario, pid: int) -> ClientData:
    fed = federated_data(scenario)
    ds = fed.dataset
    train = np.setdiff1d(fed.train_indices[pid], public_split(scenario))
    test = fed.test_indices[pid]
    part = scenario.data.partition
    style = client_style(part.name, part.params, pid)
    noise = DomainsParams.model_validate(part.params).noise_std if style is not None else 0.0
    tr, te = torch.from_numpy(train), torch.from_numpy(np.asarray(test).copy())
    return ClientData(
        styled(ds.train.rows(train), style, ds.mean, ds.std, noise, (scenario.seed, pid, 0)),
        ds.y_train[tr],
        styled(ds.test.rows(np.asarray(test)), style, ds.mean, ds.std, noise, (scenario.seed, pid, 1)),
        ds.y_test[te],
    )


def prompt_client_data(scenario: Scenario, pid: int) -> ClientData:
    """Client ``pid``'s data: its partition minus the public split, in its domain's style."""
    return _CLIENT_DATA.get((scenario.to_json(), pid), lambda: _client_data(scenario, pid))


def new_generator(scenario: Scenario) -> PromptGenerator:
    """The generator before round 1 (seeded); its P_base is every variant's initial prompt."""
    p = params_of(scenario)
    arch = MODELS.params_of(scenario.model.name, scenario.model.params)
    dim, patch = int(getattr(arch, "dim")), int(getattr(arch, "patch_size"))  # noqa: B009  # both ViTs have them
    channels = federated_data(scenario).dataset.input_shape[0]
    bound = vpt_init_bound(channels, patch, dim)
    logit_std = scenario.algorithm.params.get("attention_logit_std")  # pFedPG's parameters only
    return PromptGenerator(
        scenario.clients.num,
        p.num_prompts,
        dim,
        bound,
        scenario.seed,
        None if logit_std is None else float(logit_std),
    )


def initial_prompts(scenario: Scenario) -> torch.Tensor:
    """The prompts every variant starts from (P_base of the initial generator), ``[K, l]``."""
    return new_generator(scenario).base.detach().clone()


def prompt_record(prompts: torch.Tensor) -> ArrayRecord:
    """The prompts as they travel."""
    return ArrayRecord({PROMPTS_KEY: to_array(prompts.detach().numpy().astype(np.float32))})


def tensor_of(record: ArrayRecord, key: str) -> torch.Tensor:
    """A copy of one array of a record as a tensor."""
    return torch.from_numpy(np.array(array_view(record[key])))
