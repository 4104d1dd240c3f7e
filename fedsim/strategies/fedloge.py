"""FedLoGe server side (Xiao et al., ICLR 2024, https://arxiv.org/abs/2401.08977).

Global model = backbone f_theta (with BatchNorm statistics, if any) + auxiliary head
psi; both are averaged weighted by sample count (FedAvg's aggregation). The static
sparse ETF classifier (SSE-C) is never sent: server and clients regenerate it from
the run's seed. Each client's local head phi_k stays on the client.

Server-side evaluation, on the balanced global test set: generic accuracy with the
SSE-C head (``server_ssec_accuracy``, the generic head the authors' code logs every
round) and with the realigned psi_hat (``server_accuracy``, the generic model of the
paper's GLA-FR), each also per head / middle / tail class group. The maths is in
:mod:`fedsim.methods.fedloge`; the method in full: docs/algorithms/fedloge.md.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from flwr.app import ArrayRecord
from pydantic import Field
from torch import nn

from fedsim.config import Params, Scenario
from fedsim.methods.fedloge import cached_ssec, realign_generic
from fedsim.metrics import server_group_accuracy
from fedsim.records import load_arrays, model_to_arrays
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.registry import STRATEGIES
from fedsim.training import derive_seed
from fedsim.workspace import federated_data, new_model, scenario_of


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


@lru_cache(maxsize=8)
def _worker_net(text: str, slot: str) -> FedLoGeNet:
    return build_net(scenario_of(text))


def worker_net(scenario: Scenario, slot: str = "client") -> FedLoGeNet:
    """One FedLoGe network per process and slot, reused by every call."""
    return _worker_net(scenario.to_json(), slot)


@torch.no_grad()
def evaluate_generic(scenario: Scenario, arrays: ArrayRecord) -> dict[str, float]:
    """Generic accuracy with SSE-C and with psi_hat on the global test set (and per group)."""
    net = worker_net(scenario, "server")
    load_arrays(net, arrays)
    net.eval()
    ds = federated_data(scenario).dataset
    z = torch.cat([net.features(ds.x_test[i : i + 1024]) for i in range(0, len(ds.y_test), 1024)])
    psi_hat = realign_generic(net.psi.weight, params_of(scenario).generic_scale)
    out: dict[str, float] = {}
    for name, logits in (("server", z @ psi_hat.T + net.psi.bias), ("server_ssec", net.ssec_logits(z))):
        pred = logits.argmax(1)
        out[f"{name}_accuracy"] = float((pred == ds.y_test).float().mean())
        out.update(server_group_accuracy(pred, ds.y_test, scenario, name))
    out["server_loss"] = float(nn.functional.cross_entropy(z @ psi_hat.T + net.psi.bias, ds.y_test))
    return out


class FedLoGe(FedAvg):
    """FedAvg's sampling and sample-weighted averaging of backbone and psi."""

    stateful_clients = True

    def initial_arrays(self) -> ArrayRecord:
        """Backbone and psi of a freshly initialised network."""
        return model_to_arrays(build_net(self.scenario))

    def server_evaluate(self, server_round: int, arrays: ArrayRecord) -> dict[str, float]:
        """Generic accuracy with SSE-C and with the realigned psi_hat."""
        return evaluate_generic(self.scenario, arrays)


@STRATEGIES.register(
    "fedloge", params=FedLoGeParams, summary="Static sparse ETF + realignment (Xiao et al. 2024)"
)
def make_fedloge(scenario: Scenario, params: FedLoGeParams) -> FedLoGe:
    """Build FedLoGe for a scenario."""
    return FedLoGe(scenario)
