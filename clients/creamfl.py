"""CreamFL client (Yu et al., ICLR 2023; docs/algorithms/creamfl.md).

Each client keeps its own model (small encoders of its modality plus a classifier head)
in ``context.state`` for the whole run; no weights are ever sent. One round:

1. the model as it is at round start is the frozen "previous" model: its public
   representations are the intra-modal negatives;
2. the scenario's local epochs on private data (plus ``client_warmup_epochs`` the
   first time): image clients classify shapes, text clients one caption attribute
   (cross-entropy), image-text clients the symmetric InfoNCE on their private pairs;
3. a pass over the public set with lambda * (L_inter + L_intra) per modality held
   (tau 0.5, lambda 0.5), against the server's global representations I^g, T^g;
4. the reply carries the client's representations of the public set, ``[|P|, d]`` per
   modality, and metrics.

A train message without global representations (the public-only baseline) is answered
at once without training.
"""

from __future__ import annotations

import io

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from torch import nn

from fedsim.clients.common import ClientAlgorithm, ClientEnv, client_env, number, reply
from fedsim.config import OptimizerSpec, Scenario
from fedsim.data.paired import HAS_IMAGE, HAS_TEXT, Modality, PrivateSet
from fedsim.devices import CPU, move_optimizer, placed
from fedsim.methods.creamfl import (
    GLOBAL_RECORD,
    LOCAL_RECORD,
    CreamFLParams,
    encode_set,
    info_nce,
    inter_modal_loss,
    intra_modal_loss,
    new_net,
    paired_of,
    params_of,
    public_inputs,
)
from fedsim.models.multimodal import MultimodalNet
from fedsim.records import arrays_to_numpy, load_arrays, numpy_to_arrays, state_to_arrays
from fedsim.training import Stats, derive_seed, make_optimizer, optimise_epoch

#: Key of the client's model in ``context.state`` (never sent).
MODEL_KEY = "creamfl.model"
#: Rounds this client has trained (reported).
AGE_KEY = "creamfl.age"
#: Key of the client's optimizer state in ``context.state`` (``client_optimizer: kept``).
OPTIMIZER_KEY = "creamfl.optimizer"


def modalities_of(modality: str) -> list[str]:
    """The encoders a client of ``modality`` has: ``image``, ``text`` or both."""
    return [m for m, has in (("image", HAS_IMAGE[modality]), ("text", HAS_TEXT[modality])) if has]


def private_epochs(local_epochs: int, params: CreamFLParams, age: int) -> int:
    """Private epochs of a client that has trained ``age`` rounds: the warm-up ones come first."""
    return local_epochs + (params.client_warmup_epochs if age == 0 else 0)


def local_schedule(local_epochs: int, params: CreamFLParams, age: int) -> list[str]:
    """The round's passes in order, each ``private`` or ``public`` (the regularised pass).

    ``interleaved`` (the authors' code): a public pass after every private epoch;
    ``private_then_public``: every private epoch, then one public pass. Warm-up epochs come
    first and alone; without a regulariser there is no public pass.
    """
    warmup = ["private"] * (private_epochs(local_epochs, params, age) - local_epochs)
    public = ["public"] if params.inter or params.intra else []
    if params.local_schedule == "interleaved":
        return warmup + (["private", *public] * local_epochs)
    return warmup + ["private"] * local_epochs + public


def _to_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def client_optimizer(
    context: Context, net: MultimodalNet, spec: OptimizerSpec, params: CreamFLParams
) -> torch.optim.Optimizer:
    """The client's optimizer: with its state of the last round (``client_optimizer: kept``) or new."""
    optimizer = make_optimizer(net.parameters(), spec)
    if params.client_optimizer == "kept" and OPTIMIZER_KEY in context.state.config_records:
        raw = context.state.config_records[OPTIMIZER_KEY]["state"]
        optimizer.load_state_dict(torch.load(io.BytesIO(raw), weights_only=True))  # type: ignore[arg-type]  # bytes, as stored
    return optimizer


def private_epoch(
    net: MultimodalNet,
    data: PrivateSet,
    *,
    tau: float,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> Stats:
    """One supervised epoch on the client's private data (CE, or InfoNCE for pairs)."""
    correct = 0

    def batch_loss(idx: torch.Tensor) -> torch.Tensor | None:
        nonlocal correct
        if data.modality == "image_text":
            if len(idx) < 2:
                return None
            img, txt = net.image(data.images[idx]), net.text(data.tokens[idx])  # type: ignore[index,misc]  # a pair client holds both
            hits = (img @ txt.T).argmax(1) == torch.arange(len(idx), device=img.device)  # in-batch retrieval
            loss = info_nce(img, txt, tau)
        else:
            head = net.image_head if data.modality == "image" else net.text_head
            inputs = data.images if data.modality == "image" else data.tokens
            logits = head(net.encode(data.modality, inputs[idx]))  # type: ignore[index,misc]  # held for its modality
            hits = logits.argmax(1) == data.labels[idx]
            loss = nn.functional.cross_entropy(logits, data.labels[idx])
        correct += int(hits.sum())
        return loss

    net.train()
    n = len(data)
    loss = optimise_epoch(n, batch_size, optimizer, generator, batch_loss)
    return Stats(loss, correct / max(n, 1), n)


def public_regularised_pass(
    net: MultimodalNet,
    public_data: dict[str, torch.Tensor],
    global_reps: dict[str, torch.Tensor],
    previous: dict[str, torch.Tensor],
    params: CreamFLParams,
    *,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> float:
    """One pass over the public set with lambda * (L_inter + L_intra) per modality; the mean loss."""
    other = {"image": "text", "text": "image"}

    intra_scale = 1.0 / len(public_data) if params.pair_intra == "mean" else 1.0

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        loss = torch.zeros(())
        for m, inputs in public_data.items():
            z = net.encode(m, inputs[idx])
            if params.inter:
                loss = loss + inter_modal_loss(z, global_reps[other[m]], idx, params.tau)
            if params.intra:
                intra = intra_modal_loss(z, global_reps[m][idx], previous[m][idx], params.tau)
                loss = loss + intra_scale * intra
        return params.reg_weight * loss

    net.train()
    return optimise_epoch(len(next(iter(public_data.values()))), batch_size, optimizer, generator, batch_loss)


def client_model(
    context: Context, scenario: Scenario, partition_id: int, modality: Modality
) -> tuple[MultimodalNet, int]:
    """This client's model from ``context.state`` (or a fresh one, seeded by (seed, client)) and its age."""
    net = new_net(scenario, modality, False, derive_seed(scenario.seed, partition_id, 0xC4EA))
    if MODEL_KEY in context.state.array_records:
        load_arrays(net, context.state.array_records[MODEL_KEY])
        return net, number(context.state.config_records[AGE_KEY]["rounds"])
    return net, 0


def train(msg: Message, context: Context) -> Message:
    """One CreamFL client round: private epoch, regularised public pass, public representations."""
    env = client_env(msg, context)
    if GLOBAL_RECORD not in msg.content.array_records:  # public-only baseline: nothing to do
        return reply(msg, env, Stats(0.0, 0.0, 0))
    modality = paired_of(env.scenario).modality_of(env.partition_id)
    with env.timed():
        net, age = client_model(context, env.scenario, env.partition_id, modality)
        with placed(env.device, net) as device:
            stats, reg, local, optimizer = _local_round(msg, context, env, net, age, device)
        context.state[MODEL_KEY] = state_to_arrays(net.state_dict())
        context.state[AGE_KEY] = ConfigRecord({"rounds": age + 1})
        if params_of(env.scenario).client_optimizer == "kept":
            move_optimizer(optimizer, CPU)
            context.state[OPTIMIZER_KEY] = ConfigRecord({"state": _to_bytes(optimizer.state_dict())})
    out = reply(msg, env, stats, **{"public-loss": reg, "model-rounds": age + 1})
    out.content[LOCAL_RECORD] = local
    return out


def _local_round(
    msg: Message, context: Context, env: ClientEnv, net: MultimodalNet, age: int, device: torch.device
) -> tuple[Stats, float, ArrayRecord, torch.optim.Optimizer]:
    """The round's passes on ``device``: (last private stats, last public loss, the public set's
    representations, the optimizer)."""
    p, data = params_of(env.scenario), paired_of(env.scenario)
    held = modalities_of(data.modality_of(env.partition_id))
    public = {m: public_inputs(data.public, m).to(device) for m in held}
    previous = {m: encode_set(net, m, x).to(device) for m, x in public.items()}  # round-start model
    global_reps = {
        k: torch.from_numpy(v.copy()).to(device)
        for k, v in arrays_to_numpy(msg.content.array_records[GLOBAL_RECORD]).items()
    }
    spec = env.scenario.train
    stats, private = Stats(0.0, 0.0, 0), data.private(env.partition_id).to(device)
    optimizer, generator = client_optimizer(context, net, spec.optimizer, p), env.generator(0)
    public_generator, reg = env.generator(1), 0.0
    for kind in local_schedule(spec.local_epochs, p, age):
        if kind == "private":
            stats = private_epoch(
                net,
                private,
                tau=p.contrastive_tau,
                batch_size=spec.batch_size,
                optimizer=optimizer,
                generator=generator,
            )
        else:
            reg = public_regularised_pass(
                net,
                public,
                global_reps,
                previous,
                p,
                batch_size=spec.batch_size,
                optimizer=optimizer,  # the same optimizer as the private epoch (see the server's)
                generator=public_generator,
            )
    local = numpy_to_arrays({m: encode_set(net, m, x).numpy() for m, x in public.items()})
    return stats, reg, local, optimizer


def evaluate(msg: Message, context: Context) -> Message:
    """No local evaluation (the server does not ask for it); an empty reply."""
    env = client_env(msg, context)
    return Message(
        RecordDict({"metrics": MetricRecord({"num-examples": 0, "partition-id": env.partition_id})}),
        reply_to=msg,
    )


#: The client half, registered with the server half in :mod:`fedsim.algorithms`.
HANDLERS = ClientAlgorithm(train=train, evaluate=evaluate)
