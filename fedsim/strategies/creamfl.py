"""CreamFL server side (Yu et al., ICLR 2023, https://arxiv.org/abs/2302.08888).

No model weights are exchanged: only representations of the public set. Per round
(docs/algorithms/creamfl.md, maths in :mod:`fedsim.methods.creamfl`):

1. the server model (larger image and text encoders) trains one epoch on the public
   pairs with the symmetric InfoNCE (the authors use PCME's soft contrastive loss);
2. it encodes the public set, I^g and T^g ``[|P|, d]``, and sends both to the sampled
   clients (``configure_train``);
3. clients train (``clients/creamfl.py``) and send back their public representations,
   ``[|P|, d]`` per modality they hold;
4. per modality with at least one reply, the global-local cross-modal ensemble (or the
   mean, ``aggregation: mean``) gives I_bar / T_bar; a modality without a sampled
   client is left out of the distillation, and a round without any skips it;
5. the server distils for one epoch: kd_weight * (MSE(f^I, I_bar) + MSE(f^T, T_bar)).

The global arrays the round loop carries (and checkpoints) are the server model's
weights; they never leave the server. ``public_only: true`` is the baseline of a
server trained on public data alone: its train messages carry no representations,
clients answer without training, nothing is distilled. Two departures from the paper,
off by default, stand in for its pretrained encoders: ``server_warmup_rounds: k`` runs
the first k rounds as the public-only baseline does (the same server, round by round)
before clients take part, and ``client_warmup_epochs: e`` gives each client e extra
private epochs the first time it trains.

Server-side evaluation: image-to-text and text-to-image Recall@1/5/10 and rsum on
the paired test set. Client-side evaluation is not run (clients' models are
classifiers of their own private task; the method is judged on the server).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any, Literal

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedsim.config import Scenario
from fedsim.data.paired import PairedSet
from fedsim.devices import module_device, placed, resolve
from fedsim.memo import Memo, memo
from fedsim.methods.creamfl import (
    AGGREGATIONS,
    GLOBAL_RECORD,
    LOCAL_RECORD,
    MODALITY_KEYS,
    CreamFLParams,
    aggregate,
    cosine_lr,
    distillation_diagnostics,
    encode_set,
    info_nce,
    model_params,
    mse,
    new_net,
    paired_of,
    public_inputs,
    recall_at_k,
    shifted,
)
from fedsim.models.multimodal import MultimodalNet
from fedsim.records import arrays_to_numpy, load_arrays, model_to_arrays, numpy_to_arrays
from fedsim.strategies.base import NodeInfo, aggregate_metrics
from fedsim.strategies.fedavg import FedAvg
from fedsim.training import derive_seed, optimise_epoch

_SALT_SERVER_TRAIN, _SALT_SERVER_KD, _SALT_INIT = 0x5E1, 0x5E2, 0x5E3


def server_net(scenario: Scenario) -> MultimodalNet:
    """The server's network (both encoders, larger widths), initialised from the run's seed."""
    return new_net(scenario, "image_text", True, derive_seed(scenario.seed, _SALT_INIT))


def train_contrastive(
    net: MultimodalNet,
    images: torch.Tensor,
    tokens: torch.Tensor,
    *,
    tau: float,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    reduction: Literal["mean", "sum"] = "mean",
    clip: float | None = None,
) -> float:
    """One epoch of symmetric InfoNCE on pairs; the mean of the batches' losses (per item)."""

    device = module_device(net)
    images, tokens = images.to(device), tokens.to(device)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor | None:
        if len(idx) < 2:
            return None
        return info_nce(net.encode("image", images[idx]), net.encode("text", tokens[idx]), tau, reduction)

    net.train()
    return optimise_epoch(len(tokens), batch_size, optimizer, generator, batch_loss, clip)


def distil(
    net: MultimodalNet,
    public: PairedSet,
    targets: dict[str, torch.Tensor],
    *,
    kd_weight: float,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    shift: int = 0,
    clip: float | None = None,
) -> float:
    """One epoch of kd_weight * sum_m MSE(f^m(x_j), target^m_j) over the public set; the mean loss.

    ``shift``: each public image is translated by up to this many pixels (the targets are
    the clients' representations of the unshifted images, as in the authors' code).
    """

    device = module_device(net)
    sources = {m: public_inputs(public, m).to(device) for m in targets}
    targets = {m: t.to(device) for m, t in targets.items()}

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        inputs = {m: sources[m][idx] for m in targets}
        if "image" in inputs:
            inputs["image"] = shifted(inputs["image"], shift, generator)
        return kd_weight * sum(mse(net.encode(m, inputs[m]), t[idx]) for m, t in targets.items())  # type: ignore[return-value]  # targets is never empty: a tensor

    net.train()
    return optimise_epoch(len(public), batch_size, optimizer, generator, batch_loss, clip)


def client_types(replies: list[dict[str, torch.Tensor]]) -> int:
    """How many client types (image, text, image-text) sent representations this round."""
    return len({tuple(sorted(reps)) for reps in replies if reps})


def aggregate_modality(
    local: torch.Tensor, global_other: torch.Tensor, how: str, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(I_bar ``[|P|, d]``, weights ``[C, |P|]``) of one modality's client representations."""
    weights = AGGREGATIONS[how](local, global_other, chunk)
    return aggregate(local, weights), weights


def evaluate_retrieval(scenario: Scenario, arrays: ArrayRecord) -> dict[str, float]:
    """Recall@1/5/10 both ways and rsum of the server model on the paired test set."""
    net = _EVAL_NETS.get(scenario.to_json(), lambda: server_net(scenario))
    load_arrays(net, arrays)
    test = paired_of(scenario).test
    with placed(resolve(scenario.train.device), net):
        sim = encode_set(net, "image", test.images) @ encode_set(net, "text", test.tokens).T
    return {f"server_{k}": v for k, v in recall_at_k(sim).items()}


_EVAL_NETS: Memo[MultimodalNet] = memo("creamfl.eval_net", 4)  # key: scenario JSON


class CreamFL(FedAvg):
    """Server of CreamFL: public training, representation broadcast, ensemble, distillation."""

    replies_are_the_model = False  # replies are checked for NaN/Inf only

    stateful_clients = True

    def __init__(self, scenario: Scenario, params: CreamFLParams) -> None:
        super().__init__(scenario)
        model_params(scenario)  # the model section is checked before the run starts
        self.params = params
        self._net: MultimodalNet | None = None
        self._opt: torch.optim.Optimizer | None = None
        self._kd_opt: torch.optim.Optimizer | None = None
        self._global: dict[str, torch.Tensor] = {}
        self._server_metrics: dict[str, float] = {}

    @property
    def net(self) -> MultimodalNet:
        """The server model this process trains (built on first use)."""
        if self._net is None:
            self._net = server_net(self.scenario)
        return self._net

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The Adam of the server's public contrastive epochs, kept for the whole run."""
        if self._opt is None:
            self._opt = self._server_adam()
        return self._opt

    @property
    def distil_optimizer(self) -> torch.optim.Optimizer:
        """The Adam of the distillation epochs (``distil_optimizer``).

        ``shared`` (default, as the authors' code does): the public epochs' Adam. Its
        momentum then dominates the distillation, whose loss is some 500x smaller than the
        contrastive one (0.001-0.008 against 0.4-4), so the distillation's steps mostly
        replay the last contrastive direction (README, "CreamFL": distilling towards the server's own
        representations, a zero loss, halves its public Recall@1). ``own``: an Adam of
        its own, kept for the whole run; it takes full-size steps towards the targets
        whatever kd_weight is.
        """
        if self.params.distil_optimizer == "shared":
            return self.optimizer
        if self._kd_opt is None:
            self._kd_opt = self._server_adam()
        return self._kd_opt

    def _placed(self) -> AbstractContextManager[torch.device]:
        """The server net and its optimizers on ``train.device`` for the enclosed epochs."""
        device = resolve(self.scenario.train.device)
        return placed(device, self.net, optimizers=(self.optimizer, self.distil_optimizer))

    def _server_adam(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.params.server_lr)

    def _generator(self, server_round: int, salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(self.scenario.seed, server_round, salt))

    def initial_arrays(self) -> ArrayRecord:
        """The server model's initial weights (they stay on the server)."""
        return model_to_arrays(server_net(self.scenario))

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Steps 1-2: a public contrastive epoch, then the public set's global representations."""
        p, public = self.params, paired_of(self.scenario).public
        load_arrays(self.net, arrays)
        lr = p.server_lr
        if p.server_schedule == "cosine":
            lr = cosine_lr(p.server_lr, server_round, self.scenario.rounds)
        for opt in (self.optimizer, self.distil_optimizer):  # the same one when shared
            for group in opt.param_groups:
                group["lr"] = lr
        with self._placed():
            loss = train_contrastive(
                self.net,
                public.images,
                public.tokens,
                tau=p.contrastive_tau,
                batch_size=p.server_batch_size,
                optimizer=self.optimizer,
                generator=self._generator(server_round, _SALT_SERVER_TRAIN),
                reduction=p.server_loss_reduction,
                clip=p.server_grad_clip,
            )
            self._global = {m: encode_set(self.net, m, public_inputs(public, m)) for m in MODALITY_KEYS}
        self._server_metrics = {"server-public-loss": loss, "server-lr": lr}
        return super().configure_train(server_round, arrays, config, grid)

    def train_content(self, server_round: int, arrays: ArrayRecord, node: NodeInfo) -> RecordDict:
        """The public set's global representations and the config (no weights; none while warming up
        or public-only)."""
        content = RecordDict({"config": self._shared_content["config"]})
        if not self.params.public_only and server_round > self.params.server_warmup_rounds:
            content[GLOBAL_RECORD] = numpy_to_arrays({m: g.numpy() for m, g in self._global.items()})
        return content

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """No client-side evaluation (it would need the server's weights)."""
        return []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Steps 4-5: ensemble (or mean) per modality, then distillation into the server model."""
        p = self.params
        ok = [m for m in self.ordered(replies) if not m.has_error()]
        local: dict[str, list[torch.Tensor]] = {m: [] for m in MODALITY_KEYS}
        sent: list[dict[str, torch.Tensor]] = []
        for msg in ok:
            if LOCAL_RECORD in msg.content.array_records:
                reps = arrays_to_numpy(msg.content.array_records[LOCAL_RECORD])
                sent.append({k: torch.from_numpy(v.copy()) for k, v in reps.items()})
                for key, value in sent[-1].items():
                    local[key].append(value)
        metrics: dict[str, Any] = dict(self._server_metrics)  # MetricRecord values
        targets: dict[str, torch.Tensor] = {}
        stacked: dict[str, torch.Tensor] = {}
        other = {"image": "text", "text": "image"}
        for m in MODALITY_KEYS:
            metrics[f"{m}-clients"] = len(local[m])
            if local[m] and not p.public_only:
                stacked[m] = torch.stack(local[m])
                targets[m], weights = aggregate_modality(
                    stacked[m], self._global[other[m]], p.aggregation, p.chunk_size
                )
                metrics[f"{m}-weight-max"] = float(weights.max(0).values.mean())
        if targets:
            metrics.update(distillation_diagnostics(self._global, stacked, targets))
        if targets and p.kd_weight > 0:
            kd_weight = p.kd_weight * (client_types(sent) if p.kd_per_client_type else 1)
            metrics["server-kd-weight"] = kd_weight
            with self._placed():
                metrics["server-kd-loss"] = distil(
                    self.net,
                    paired_of(self.scenario).public,
                    targets,
                    kd_weight=kd_weight,
                    batch_size=p.server_batch_size,
                    optimizer=self.distil_optimizer,
                    generator=self._generator(server_round, _SALT_SERVER_KD),
                    shift=p.kd_shift,
                    clip=p.server_grad_clip,
                )
        if ok:
            metrics.update(aggregate_metrics([m.content for m in ok], "num-examples"))
        return model_to_arrays(self.net), MetricRecord(metrics)

    def server_evaluate(self, server_round: int, arrays: ArrayRecord) -> dict[str, float]:
        """Image-text retrieval on the paired test set."""
        return evaluate_retrieval(self.scenario, arrays)

    def state_dict(self) -> dict[str, Any]:
        """The server optimizers' states (the global representations are recomputed each round)."""
        state = {"server_optimizer": self.optimizer.state_dict()}
        if self.params.distil_optimizer == "own":
            state["distil_optimizer"] = self.distil_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the server optimizers' states."""
        if "server_optimizer" in state:
            self.optimizer.load_state_dict(state["server_optimizer"])
        if "distil_optimizer" in state and self.params.distil_optimizer == "own":
            self.distil_optimizer.load_state_dict(state["distil_optimizer"])
