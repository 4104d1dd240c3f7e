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

Backbone. No pretrained ViT can be downloaded: :func:`cached_backbone` trains the ViT on a
public split that no client sees (:func:`public_indices`) and caches its encoder under the
SHA-256 of everything that determines it (public images and labels, architecture,
recipe), so every process and every later run reuses the same file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedsim.cache import cache_dir
from fedsim.data.base import derive_rng, stratified_split
from fedsim.models.base import SplitModel

SALT_PUBLIC = 0x9B1C
SALT_PRETRAIN = 0x9B1D


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


def public_indices(train_labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the public split: a stratified ``fraction`` of the training split.

    No client trains on them (clients drop them from their partition); the backbone is
    pretrained on them.
    """
    _, public = stratified_split(np.asarray(train_labels), fraction, derive_rng(seed, SALT_PUBLIC))
    return public


@dataclass(frozen=True)
class PretrainRecipe:
    """How the backbone is pretrained on the public split (Adam, full batch passes)."""

    epochs: int = 100
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 1e-4


def pretrain(model: SplitModel, x: torch.Tensor, y: torch.Tensor, recipe: PretrainRecipe, seed: int) -> float:
    """Train the whole model (encoder and a throw-away head) in place; last epoch's accuracy."""
    from fedsim.training import train_epochs

    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    stats = train_epochs(
        model, x, y, epochs=recipe.epochs, batch_size=recipe.batch_size, optimizer=opt, generator=gen
    )
    model.eval()
    return stats.accuracy


def content_key(x: torch.Tensor, y: torch.Tensor, description: Mapping[str, object]) -> str:
    """SHA-256 of the public images and labels and a JSON description (architecture, recipe)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x.numpy()).tobytes())
    h.update(np.ascontiguousarray(y.numpy()).tobytes())
    h.update(json.dumps(description, sort_keys=True, default=str).encode())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Backbone:
    """A frozen encoder's weights and where they came from."""

    state: dict[str, torch.Tensor]
    path: Path
    sha256: str
    pretrained_here: bool


def cached_backbone(
    build: Callable[[], SplitModel],
    x: torch.Tensor,
    y: torch.Tensor,
    description: Mapping[str, object],
    recipe: PretrainRecipe,
    seed: int,
) -> Backbone:
    """The encoder pretrained on (x, y), from ``cache_dir()/pfedpg/vit-<key>.pt`` or trained now.

    The key is :func:`content_key` of the data and of ``description`` plus the recipe and
    seed; the file is written atomically, so concurrent processes agree on it.
    """
    key = content_key(x, y, {**description, "recipe": asdict(recipe), "seed": seed})
    file = cache_dir() / "pfedpg" / f"vit-{key[:24]}.pt"
    trained = False
    if not file.exists():
        model = build()
        pretrain(model, x, y, recipe, derive_seed_int(seed))
        buf = io.BytesIO()
        torch.save({k: v.detach().clone() for k, v in model.features.state_dict().items()}, buf)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, file)
        trained = True
    return Backbone(torch.load(file, weights_only=True), file, file_sha256(file), trained)


def derive_seed_int(seed: int) -> int:
    """The pretraining's batch-order seed, derived from the scenario seed."""
    return int(np.random.SeedSequence([seed, SALT_PRETRAIN]).generate_state(1)[0])
