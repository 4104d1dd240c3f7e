"""FedLoGe client (Xiao et al., ICLR 2024; the method in full: docs/algorithms/fedloge.md).

Per batch, with z = f_theta(x):
- L_bb  = CE(SSE-C(z), y)          updates the backbone only (SSE-C is frozen);
- L_aux = CE(psi(z.detach()), y)   updates the auxiliary global head psi only;
- L_loc = CE(phi_k(z.detach()), y) updates the local head phi_k only.
The three losses touch disjoint parameters, so one backward pass of their sum and one
SGD step over all three sets equals three separate optimisers (fresh every round, the
scenario's optimiser; the authors use SGD lr 0.03, momentum 0.5).

The backbone and psi go back to the server. phi_k lives in ``context.state`` for the
whole run and never leaves the client.

Local evaluation, on the authors' terms (their ``localtest``): classes absent from the
client's local test set are masked; ``accuracy`` is phi_k(z) + psi(z), the head their
code logs every round; ``accuracy-realigned`` is GLA-FR's local model phi_k(z) +
psi_k(z), psi_k_c = ||phi_k_c|| psi_c. Both also per head / middle / tail group of this
client's own local test distribution. The method in full: docs/algorithms/fedloge.md.
"""

from __future__ import annotations

import torch
from flwr.app import Context, Message
from torch import nn

from fedsim.clients.common import ClientAlgorithm, arrays_of, client_env, persistent_linear, reply
from fedsim.methods.fedloge import local_logits, worker_net
from fedsim.metrics import local_accuracy, local_class_groups, mask_absent, present_classes
from fedsim.records import load_arrays, state_to_arrays
from fedsim.training import Stats, make_optimizer, train_epochs

#: Key of the local head in ``context.state`` (never sent).
PHI_KEY = "fedloge.phi"
#: Key of the number of rounds the local head has been trained (reported, not the head).
AGE_KEY = "fedloge.phi-age"


def local_head(
    context: Context, feature_dim: int, num_classes: int, seed: int, pid: int
) -> tuple[nn.Linear, int]:
    """phi_k from ``context.state`` (or a fresh one seeded by (seed, client)) and its age in rounds."""
    return persistent_linear(context, PHI_KEY, AGE_KEY, feature_dim, num_classes, seed, pid, 0xF1)


def train(msg: Message, context: Context) -> Message:
    """One round of FedLoGe local training."""
    from flwr.app import ConfigRecord

    env = client_env(msg, context)
    with env.timed():
        net = worker_net(env.scenario)
        load_arrays(net, msg.content.array_records["arrays"])
        d, c = net.psi.in_features, net.psi.out_features
        phi, age = local_head(context, d, c, env.scenario.seed, env.partition_id)

        def loss_fn(_model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            z = net.features(x)
            logits = net.ssec_logits(z)
            zd = z.detach()
            ce = nn.functional.cross_entropy
            return ce(logits, y) + ce(net.psi(zd), y) + ce(phi(zd), y), logits

        spec = env.scenario.train
        params = [*net.features.parameters(), *net.psi.parameters(), *phi.parameters()]
        stats = train_epochs(
            net,
            env.data.x_train,
            env.data.y_train,
            epochs=spec.local_epochs,
            batch_size=spec.batch_size,
            optimizer=make_optimizer(params, spec.optimizer),
            generator=env.generator(),
            loss_fn=loss_fn,
        )
        context.state[PHI_KEY] = state_to_arrays(phi.state_dict())
        context.state[AGE_KEY] = ConfigRecord({"rounds": age + 1})
        arrays = arrays_of(net)
    return reply(msg, env, stats, arrays, **{"local-head-rounds": age + 1})


@torch.no_grad()
def evaluate_local(msg: Message, context: Context) -> Message:
    """Local accuracy on the client's local test set: phi_k + psi, and realigned (GLA-FR).

    A client that has not trained yet evaluates with its fresh local head (the authors
    initialise every client's head at the start of the run).
    """
    env = client_env(msg, context)
    with env.timed():
        net = worker_net(env.scenario)
        load_arrays(net, msg.content.array_records["arrays"])
        net.eval()
        d, c = net.psi.in_features, net.psi.out_features
        x, y = env.data.x_test, env.data.y_test
        z = net.features(x)
        present = present_classes(y, c)
        phi, _ = local_head(context, d, c, env.scenario.seed, env.partition_id)
        logits = mask_absent(phi(z) + net.psi(z), present)
        realigned = local_logits(z, phi, net.psi, present)
        loss = float(nn.functional.cross_entropy(logits, y)) if len(y) else 0.0
        groups = local_class_groups(y, c)
        metrics = local_accuracy(logits, y, groups)
        metrics.update(local_accuracy(realigned, y, groups, "accuracy-realigned"))
        acc = metrics.pop("accuracy")
    return reply(
        msg, env, Stats(loss, acc, len(y)), **metrics, **{"has-local-head": float(PHI_KEY in context.state)}
    )


#: The client half, registered with the server half in :mod:`fedsim.algorithms`.
HANDLERS = ClientAlgorithm(train=train, evaluate=evaluate_local)
