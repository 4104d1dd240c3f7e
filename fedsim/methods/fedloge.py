"""FedLoGe's maths (Xiao et al., ICLR 2024, https://arxiv.org/abs/2401.08977).

The method, in full: docs/algorithms/fedloge.md.

SSE-C, the static sparse equiangular-tight-frame classifier:

1. P (d x C) from the QR factorisation of a U(0, 1) matrix, so P^T P = I;
2. M = sqrt(C/(C-1)) P (I_C - 1/C 1 1^T)  (a simplex ETF, unit columns);
3. zero floor(beta d C) entries chosen uniformly over the whole matrix (beta = 0.6);
4. re-optimise the non-zero entries with Adam (lr 1e-4):
   L = sum_c (||M_c|| - 0.1)^2 - mean_c arccos(clamp(max_{j != c} cos(M_c, M_j)))
   with masked gradients (zeros stay zero);
5. the classifier is Linear(d, C) with weight M^T, frozen for the run; as in the
   authors' code it keeps nn.Linear's random initial bias, never trained
   (``algorithm.ssec_bias: false`` drops it).

GLA-FR (feature realignment, no training):

- generic: psi_hat_c = 1.7 * psi_c / ||psi_c|| per class row, bias unchanged;
- local: logits = phi_k(z) + psi_k(z) with psi_k_c = ||phi_k_c|| * psi_c (psi_c is the
  aggregated row, not re-normalised, as in the authors' code), and classes absent from
  client k's local test set masked.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from pydantic import Field
from torch import nn

from fedsim.cache import cache_dir
from fedsim.config import Params, Scenario
from fedsim.memo import Memo, memo
from fedsim.metrics import mask_absent
from fedsim.training import derive_seed
from fedsim.workspace import new_model

ETF_NORM = 0.1
GENERIC_SCALE = 1.7


def simplex_etf(d: int, num_classes: int, rng: np.random.Generator) -> torch.Tensor:
    """M = sqrt(C/(C-1)) P (I - 11^T/C) with P^T P = I (steps 1-2), as float64 [d, C]."""
    if d < num_classes:
        raise ValueError(f"SSE-C needs feature dimension d >= classes C, got d={d} < C={num_classes}")
    a = torch.from_numpy(rng.uniform(0.0, 1.0, size=(d, num_classes)))
    p, _ = torch.linalg.qr(a)
    c = num_classes
    centre = torch.eye(c, dtype=torch.float64) - torch.full((c, c), 1.0 / c, dtype=torch.float64)
    return (c / (c - 1)) ** 0.5 * p @ centre


def sparsity_mask(d: int, num_classes: int, beta: float, rng: np.random.Generator) -> torch.Tensor:
    """Bool [d, C], False at floor(beta d C) positions drawn uniformly over the matrix."""
    total = d * num_classes
    zero = rng.choice(total, size=int(np.floor(beta * total)), replace=False)
    keep = np.ones(total, dtype=bool)
    keep[zero] = False
    return torch.from_numpy(keep.reshape(d, num_classes))


def max_neighbour_cosine(m: torch.Tensor) -> torch.Tensor:
    """For each column c: max_{j != c} cos(M_c, M_j)  ([C])."""
    unit = m / m.norm(dim=0, keepdim=True).clamp_min(1e-12)
    cos = unit.T @ unit
    cos = cos - 2.0 * torch.eye(cos.shape[0], dtype=cos.dtype)  # exclude j == c
    return cos.max(dim=1).values


def ssec_loss(m: torch.Tensor) -> torch.Tensor:
    """sum_c (||M_c|| - 0.1)^2 - mean_c arccos(clamp(max_{j!=c} cos(M_c, M_j)))."""
    norm_term = ((m.norm(dim=0) - ETF_NORM) ** 2).sum()
    angle = torch.arccos(max_neighbour_cosine(m).clamp(-0.99999, 0.99999)).mean()
    return norm_term - angle


def generate_ssec(
    d: int, num_classes: int, seed: int, beta: float = 0.6, steps: int = 3000, lr: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M [d, C] float32 after re-optimisation, the mask, the sparse ETF before it)."""
    rng = np.random.default_rng([seed, 0x55EC])
    etf = simplex_etf(d, num_classes, rng)
    mask = sparsity_mask(d, num_classes, beta, rng)
    start = etf * mask
    m = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([m], lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        ssec_loss(m).backward()
        if m.grad is not None:  # always: backward() just filled it
            m.grad.mul_(mask)  # masked gradient: zeros stay zero
        opt.step()
        with torch.no_grad():
            m.mul_(mask)  # Adam's update is zero where the gradient always was
    return m.detach().float(), mask, start.float()


_SSEC: Memo[torch.Tensor] = memo("fedloge.ssec", 4)  # key: (d, num_classes, seed, beta, steps)


def cached_ssec(d: int, num_classes: int, seed: int, beta: float, steps: int) -> torch.Tensor:
    """The SSE-C weight [C, d] (M^T) for the run's seed.

    Generated once (10,000 Adam steps take ~10 s) and cached on disk, so every client
    process and every later run regenerate nothing; the cache key holds every input.
    """
    return _SSEC.get((d, num_classes, seed, beta, steps), lambda: _ssec(d, num_classes, seed, beta, steps))


def _ssec(d: int, num_classes: int, seed: int, beta: float, steps: int) -> torch.Tensor:
    file = cache_dir() / "ssec" / f"d{d}-c{num_classes}-seed{seed}-beta{beta}-steps{steps}.pt"
    if file.exists():
        weight = torch.load(file, weights_only=True)
    else:
        m, _, _ = generate_ssec(d, num_classes, seed, beta, steps)
        weight = m.T.contiguous()
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(f".{os.getpid()}.tmp")
        torch.save(weight, tmp)
        os.replace(tmp, file)
    weight.requires_grad_(False)
    return weight


def realign_generic(psi_weight: torch.Tensor, scale: float = GENERIC_SCALE) -> torch.Tensor:
    """psi_hat rows: scale * psi_c / ||psi_c||."""
    return scale * psi_weight / psi_weight.norm(dim=1, keepdim=True).clamp_min(1e-12)


def realign_local(phi_weight: torch.Tensor, psi_weight: torch.Tensor) -> torch.Tensor:
    """psi_k rows: ||phi_k_c|| * psi_c."""
    return phi_weight.norm(dim=1, keepdim=True) * psi_weight


def local_logits(z: torch.Tensor, phi: nn.Linear, psi: nn.Linear, present: torch.Tensor) -> torch.Tensor:
    """phi_k(z) + psi_k(z) with psi_k = realign_local (psi's bias kept), absent classes masked."""
    psi_k = realign_local(phi.weight, psi.weight)
    logits = phi(z) + z @ psi_k.T + psi.bias
    return mask_absent(logits, present)


# ----------------------------------------------------------------------------- what both halves share


class FedLoGeParams(Params):
    """FedLoGe's parameters (authors' defaults)."""

    sparsity: float = Field(0.6, ge=0, lt=1, description="beta: share of SSE-C entries zeroed")
    ssec_steps: int = Field(10_000, ge=0, description="Adam steps re-optimising SSE-C (authors' value)")
    generic_scale: float = Field(1.7, gt=0, description="norm of each realigned psi_hat row")
    ssec_bias: bool = Field(
        True,
        description="SSE-C keeps nn.Linear's random initial bias, frozen (the authors' code); false: no bias",
    )


class FedLoGeNet(nn.Module):
    """Backbone + frozen SSE-C + auxiliary head psi. state_dict: backbone and psi only."""

    ssec: torch.Tensor
    ssec_bias: torch.Tensor

    def __init__(
        self,
        features: nn.Module,
        feature_dim: int,
        num_classes: int,
        ssec_weight: torch.Tensor,
        ssec_bias: torch.Tensor,
    ) -> None:
        super().__init__()
        self.features = features
        self.psi = nn.Linear(feature_dim, num_classes)
        self.register_buffer("ssec", ssec_weight.clone(), persistent=False)
        self.register_buffer("ssec_bias", ssec_bias.clone(), persistent=False)

    def ssec_logits(self, z: torch.Tensor) -> torch.Tensor:
        """The frozen SSE-C classifier on features ``z``."""
        return z @ self.ssec.T + self.ssec_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the SSE-C classifier."""
        return self.ssec_logits(self.features(x))


class LocalTraining(nn.Module):
    """What a client trains in a round: the network and its local head phi_k. ``forward``
    gives the logits of FedLoGe's three losses (:func:`local_loss`): SSE-C on z, psi and
    phi_k on z detached, so each loss reaches only its own parameters."""

    def __init__(self, net: FedLoGeNet, phi: nn.Linear) -> None:
        super().__init__()
        self.net, self.phi = net, phi

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(SSE-C logits, psi logits, phi_k logits) of ``x``."""
        z = self.net.features(x)
        logits = self.net.ssec_logits(z)
        zd = z.detach()
        return logits, self.net.psi(zd), self.phi(zd)


def local_loss(outputs: object, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L_bb + L_aux + L_loc of :class:`LocalTraining`'s outputs, and the SSE-C logits."""
    assert isinstance(outputs, tuple)
    logits, psi, phi = outputs
    ce = nn.functional.cross_entropy
    return ce(logits, y) + ce(psi, y) + ce(phi, y), logits


def params_of(scenario: Scenario) -> FedLoGeParams:
    """The scenario's validated FedLoGe parameters."""
    return FedLoGeParams.model_validate(scenario.algorithm.params)


def build_net(scenario: Scenario) -> FedLoGeNet:
    """A fresh FedLoGe network for the scenario (deterministic for its seed)."""
    base = new_model(scenario)
    p = params_of(scenario)
    ssec = cached_ssec(base.feature_dim, base.num_classes, scenario.seed, p.sparsity, p.ssec_steps)
    bound = 1.0 / base.feature_dim**0.5
    bias = torch.zeros(base.num_classes)
    if p.ssec_bias:  # nn.Linear's initial bias, from its own stream of the run's seed
        bias.uniform_(
            -bound, bound, generator=torch.Generator().manual_seed(derive_seed(scenario.seed, 0x55EC))
        )
    net = FedLoGeNet(base.features, base.feature_dim, base.num_classes, ssec, bias)
    gen = torch.Generator().manual_seed(scenario.seed)
    with torch.no_grad():  # psi initialised like nn.Linear, but from the run's seed
        net.psi.weight.uniform_(-bound, bound, generator=gen)
        net.psi.bias.uniform_(-bound, bound, generator=gen)
    return net


_WORKER_NETS: Memo[FedLoGeNet] = memo("fedloge.worker_net", 8)  # key: (scenario JSON, slot)


def worker_net(scenario: Scenario, slot: str = "client") -> FedLoGeNet:
    """One FedLoGe network per process and slot, reused by every call."""
    return _WORKER_NETS.get((scenario.to_json(), slot), lambda: build_net(scenario))
