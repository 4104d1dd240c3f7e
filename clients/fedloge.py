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
from flwr.app import ConfigRecord, Context, Message
from torch import nn

from fedsim.clients.cohort import answer_groups, outputs_together, shared_time, train_together
from fedsim.clients.common import ClientAlgorithm, ClientEnv, arrays_of, client_env, persistent_linear, reply
from fedsim.cohort import Params
from fedsim.devices import placed
from fedsim.methods.fedloge import FedLoGeNet, LocalTraining, local_logits, local_loss, worker_net
from fedsim.metrics import local_accuracy, local_class_groups, mask_absent, present_classes
from fedsim.records import load_arrays, state_to_arrays
from fedsim.training import Stats, outputs

#: Key of the local head in ``context.state`` (never sent).
PHI_KEY = "fedloge.phi"
#: Key of the number of rounds the local head has been trained (reported, not the head).
AGE_KEY = "fedloge.phi-age"


def local_head(
    context: Context, feature_dim: int, num_classes: int, seed: int, pid: int
) -> tuple[nn.Linear, int]:
    """phi_k from ``context.state`` (or a fresh one seeded by (seed, client)) and its age in rounds."""
    return persistent_linear(context, PHI_KEY, AGE_KEY, feature_dim, num_classes, seed, pid, 0xF1)


def _save_head(context: Context, phi: nn.Linear | Params, age: int) -> None:
    """Keep phi_k (a head or its state_dict) and its new age in ``context.state``."""
    state = phi.state_dict() if isinstance(phi, nn.Module) else phi
    context.state[PHI_KEY] = state_to_arrays(state)
    context.state[AGE_KEY] = ConfigRecord({"rounds": age + 1})


def train(msg: Message, context: Context) -> Message:
    """One round of FedLoGe local training."""
    env = client_env(msg, context)
    with env.timed():
        net = worker_net(env.scenario)
        load_arrays(net, msg.content.array_records["arrays"])
        d, c = net.psi.in_features, net.psi.out_features
        phi, age = local_head(context, d, c, env.scenario.seed, env.partition_id)
        stats = env.local_epochs(LocalTraining(net, phi), loss_fn=lambda m, x, y: local_loss(m(x), y))
        _save_head(context, phi, age)
        arrays = arrays_of(net)
    return reply(msg, env, stats, arrays, **{"local-head-rounds": age + 1})


def _train_group(messages: list[Message], envs: list[ClientEnv], contexts: list[Context]) -> list[Message]:
    """:func:`train` for a group of messages, trained as one vectorised cohort (each client
    from its own local head)."""
    with shared_time(envs):
        net = worker_net(envs[0].scenario)
        load_arrays(net, messages[0].content.array_records["arrays"])
        d, c = net.psi.in_features, net.psi.out_features
        heads = [
            local_head(ctx, d, c, env.scenario.seed, env.partition_id)
            for ctx, env in zip(contexts, envs, strict=True)
        ]
        model = LocalTraining(net, heads[0][0])
        own = [{f"phi.{k}": v for k, v in phi.state_dict().items()} for phi, _ in heads]
        results, chunk = train_together(model, envs, own=own, criterion=local_loss)
        replies = []
        for msg, env, ctx, (_, age), (weights, stats) in zip(
            messages, envs, contexts, heads, results, strict=True
        ):
            _save_head(ctx, {k[len("phi.") :]: v for k, v in weights.items() if k.startswith("phi.")}, age)
            net.load_state_dict({k[len("net.") :]: v for k, v in weights.items() if k.startswith("net.")})
            replies.append((msg, env, stats, arrays_of(net), age + 1))
    return [
        reply(m, e, s, a, **{"local-head-rounds": rounds, "cohort-chunk": chunk})
        for m, e, s, a, rounds in replies
    ]


def train_cohort(messages: list[Message], contexts: list[Context]) -> list[Message]:
    """:func:`train` for several clients at once, trained as one vectorised cohort."""
    return answer_groups(messages, contexts, _train_group)


def _local_metrics(
    net: FedLoGeNet, z: torch.Tensor, env: ClientEnv, context: Context
) -> tuple[Stats, dict[str, float]]:
    """Local accuracy from the features ``z`` of the client's local test set: phi_k + psi, and
    realigned (GLA-FR), each also per class group; whether the client has its own head yet."""
    d, c = net.psi.in_features, net.psi.out_features
    y = env.data.y_test
    present = present_classes(y, c)
    phi, _ = local_head(context, d, c, env.scenario.seed, env.partition_id)
    logits = mask_absent(phi(z) + net.psi(z), present)
    realigned = local_logits(z, phi, net.psi, present)
    loss = float(nn.functional.cross_entropy(logits, y)) if len(y) else 0.0
    groups = local_class_groups(y, c)
    metrics = local_accuracy(logits, y, groups)
    metrics.update(local_accuracy(realigned, y, groups, "accuracy-realigned"))
    acc = metrics.pop("accuracy")
    metrics["has-local-head"] = float(PHI_KEY in context.state)
    return Stats(loss, acc, len(y)), metrics


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
        with placed(env.device, net) as device:
            z = outputs(net.features, env.data.x_test, device)
        stats, metrics = _local_metrics(net, z, env, context)
    return reply(msg, env, stats, **metrics)


@torch.no_grad()
def evaluate_cohort(messages: list[Message], contexts: list[Context]) -> list[Message]:
    """:func:`evaluate_local` for several clients at once: one batched pass of the backbone."""

    def answer(messages: list[Message], envs: list[ClientEnv], contexts: list[Context]) -> list[Message]:
        with shared_time(envs):
            net = worker_net(envs[0].scenario)
            load_arrays(net, messages[0].content.array_records["arrays"])
            net.eval()
            features = outputs_together(net.features, [env.data.x_test for env in envs])
            results = [
                _local_metrics(net, z, e, ctx) for z, e, ctx in zip(features, envs, contexts, strict=True)
            ]
        together = {"cohort-chunk": len(envs)}
        return [reply(m, e, s, **x, **together) for m, e, (s, x) in zip(messages, envs, results, strict=True)]

    return answer_groups(messages, contexts, answer)


#: The client half, registered with the server half in :mod:`fedsim.algorithms`.
HANDLERS = ClientAlgorithm(
    train=train, evaluate=evaluate_local, train_cohort=train_cohort, evaluate_cohort=evaluate_cohort
)
