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

import torch
from flwr.app import ArrayRecord
from torch import nn

from fedsim.config import Scenario
from fedsim.methods.fedloge import build_net, params_of, realign_generic, worker_net
from fedsim.metrics import server_group_accuracy
from fedsim.records import load_arrays, model_to_arrays
from fedsim.strategies.fedavg import FedAvg
from fedsim.workspace import federated_data


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
