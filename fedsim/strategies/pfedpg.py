"""pFedPG server side and its baselines (Yang et al., ICCV 2023, https://arxiv.org/abs/2308.15367).

Every client holds the same frozen ViT F* (pretrained on a public split no client sees,
see :mod:`fedsim.methods.pfedpg`) and its own linear head H_n (``context.state``). Only
K x l prompt tokens travel. Four algorithms share this code path and differ in which
prompts a client receives and what the server does with Delta_n = P_tilde_n - P_n:

==============  ===============================  =========================================
name            client n receives                server update
==============  ===============================  =========================================
``pfedpg``      P_n = G(P_base, d_n)             VJP of -Delta_n through G (lr alpha)
``pfedpg_base`` P_base (generator output unused) the same rule on P_base alone
``fedvpt``      the global prompts P             P += sum_n w_n Delta_n (FedAvg, w ~ n_k)
``vpt_local``   nothing (prompts stay local)     none
``vpt_head``    nothing; prompts never trained   none (control: H_n alone, initial P)
==============  ===============================  =========================================

``vpt_head`` is a control rather than a method: the frozen backbone with the common
initial prompts and a trained local head, so ``vpt_local`` minus ``vpt_head`` is what
tuning the prompts adds at all on a setting.

The global arrays of a run are the generator's state (pFedPG, P_base-only), the shared
prompts (FedVPT) or nothing (local), so checkpoints and resume need no extra state.
Server-side rows carry ``prompt_bytes_per_client`` and ``full_model_bytes_per_client``
(what FedAvg on the whole ViT would send each way) and the backbone's SHA-256.

The method in full: docs/algorithms/pfedpg.md.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from pydantic import BaseModel, Field, field_validator

from fedsim.config import Params, Scenario
from fedsim.data.domains import DomainsParams, client_style, styled
from fedsim.errors import UserError
from fedsim.methods.pfedpg import (
    Backbone,
    PretrainRecipe,
    PromptGenerator,
    cached_backbone,
    file_sha256,
    generator_step,
    public_indices,
    vpt_init_bound,
)
from fedsim.models import MODELS
from fedsim.models.vit import ViTEncoder
from fedsim.records import array_view, load_arrays, model_to_arrays, record_nbytes, to_array
from fedsim.strategies.base import NodeInfo, aggregate_metrics
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.registry import STRATEGIES
from fedsim.workspace import ClientData, federated_data, new_model, scenario_of

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


# ----------------------------------------------------------------------------- shared pieces


def params_of(scenario: Scenario) -> PromptParams:
    """The scenario's validated prompt parameters (the common subset)."""
    values = {k: v for k, v in scenario.algorithm.params.items() if k in PromptParams.model_fields}
    return PromptParams.model_validate(values)


def _check_model(scenario: Scenario) -> None:
    if scenario.model.name != "vit":
        raise UserError(
            f"algorithm {scenario.algorithm.name!r} needs model.name 'vit' (a prompt-taking ViT), "
            f"got {scenario.model.name!r}"
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
    _check_model(scenario)
    ds = federated_data(scenario).dataset
    idx = torch.from_numpy(public_split(scenario))
    desc = {
        "model": scenario.model.name,
        "params": MODELS.params_of(scenario.model.name, scenario.model.params).model_dump(),
        "input_shape": ds.input_shape,
        "classes": ds.num_classes,
    }
    return cached_backbone(
        lambda: new_model(scenario),
        ds.x_train[idx],
        ds.y_train[idx],
        desc,
        recipe_of(scenario),
        scenario.seed,
    )


def load_backbone(scenario: Scenario) -> Backbone:
    """The frozen encoder's weights: the user's checkpoint, or pretrained and cached."""
    _check_model(scenario)
    p = params_of(scenario)
    if p.backbone is not None:
        path = p.backbone
        return Backbone(torch.load(path, weights_only=True), path, file_sha256(path), False)
    return pretrain_backbone(scenario)


@lru_cache(maxsize=8)
def _backbone(text: str) -> Backbone:
    return load_backbone(scenario_of(text))


def backbone_of(scenario: Scenario) -> Backbone:
    """:func:`load_backbone`, once per process."""
    return _backbone(scenario.to_json())


@lru_cache(maxsize=8)
def _encoder(text: str) -> ViTEncoder:
    scenario = scenario_of(text)
    enc = new_model(scenario).features
    try:
        enc.load_state_dict(_backbone(text).state)
    except RuntimeError as exc:
        raise UserError(f"algorithm.backbone does not fit model {scenario.model.params}: {exc}") from None
    enc.requires_grad_(False)
    return enc.eval()


def frozen_encoder(scenario: Scenario) -> ViTEncoder:
    """The process's frozen ViT encoder F* (no parameter requires grad; never updated)."""
    return _encoder(scenario.to_json())


@lru_cache(maxsize=4096)
def _client_data(text: str, pid: int) -> ClientData:
    scenario = scenario_of(text)
    fed = federated_data(scenario)
    ds = fed.dataset
    train = np.setdiff1d(fed.train_indices[pid], public_split(scenario))
    test = fed.test_indices[pid]
    part = scenario.data.partition
    style = client_style(part.name, part.params, pid)
    noise = DomainsParams.model_validate(part.params).noise_std if style is not None else 0.0
    tr, te = torch.from_numpy(train), torch.from_numpy(np.asarray(test).copy())
    return ClientData(
        styled(ds.x_train[tr], style, ds.mean, ds.std, noise, (scenario.seed, pid, 0)),
        ds.y_train[tr],
        styled(ds.x_test[te], style, ds.mean, ds.std, noise, (scenario.seed, pid, 1)),
        ds.y_test[te],
    )


def prompt_client_data(scenario: Scenario, pid: int) -> ClientData:
    """Client ``pid``'s data: its partition minus the public split, in its domain's style."""
    return _client_data(scenario.to_json(), pid)


def new_generator(scenario: Scenario) -> PromptGenerator:
    """The generator before round 1 (seeded); its P_base is every variant's initial prompt."""
    p = params_of(scenario)
    model = scenario.model.params
    dim, patch = int(model.get("dim", 64)), int(model.get("patch_size", 2))
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


# ----------------------------------------------------------------------------- strategies


class PromptStrategy(FedAvg):
    """Sampling and metrics of FedAvg; prompts per client instead of a global model.

    Subclasses choose the global arrays, the prompts of each client and the update.
    """

    stateful_clients = True

    def setup(self, scenario: Scenario, nodes: list[NodeInfo]) -> None:
        """Check the model, make sure the backbone exists, measure the payloads."""
        super().setup(scenario, nodes)
        _check_model(scenario)
        self.backbone = backbone_of(scenario)
        self._bytes = {
            "prompt_bytes_per_client": record_nbytes(
                RecordDict({PROMPTS_KEY: prompt_record(initial_prompts(scenario))})
            ),
            "full_model_bytes_per_client": record_nbytes(
                RecordDict({"arrays": model_to_arrays(new_model(scenario))})
            ),
        }

    # -- hooks of the variants --------------------------------------------------------

    def prompts_for(self, arrays: ArrayRecord, partition_id: int) -> torch.Tensor | None:
        """The prompts sent to a client (None: the client uses its own)."""
        raise NotImplementedError

    def update(
        self, arrays: ArrayRecord, deltas: dict[int, torch.Tensor], weights: dict[int, float]
    ) -> ArrayRecord:
        """The new global arrays from this round's Delta_n (by partition id)."""
        return arrays

    # -- messages ---------------------------------------------------------------------

    def _content(self, arrays: ArrayRecord, config: ConfigRecord, partition_id: int) -> RecordDict:
        content = RecordDict({"config": config})
        prompts = self.prompts_for(arrays, partition_id)
        if prompts is not None:
            content[PROMPTS_KEY] = prompt_record(prompts)
        return content

    def train_content(self, server_round: int, arrays: ArrayRecord, node: NodeInfo) -> RecordDict:
        """Only the prompts of this client (and the config) go down."""
        self._current = arrays
        return self._content(arrays, self._shared_content["config"], node.partition_id)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        """Each client evaluates with its own (freshly generated) prompts and its head."""
        out = []
        for msg in super().configure_evaluate(server_round, arrays, config, grid):
            pid = self._pid_of[msg.metadata.dst_node_id]
            content = self._content(arrays, msg.content["config"], pid)
            out.append(
                Message(content, dst_node_id=msg.metadata.dst_node_id, message_type=msg.metadata.message_type)
            )
        return out

    def aggregate_train(
        self, server_round: int, replies: list[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Apply the variant's update with every reply's Delta_n, in partition order."""
        valid = [r for r in self.ordered(replies) if not r.has_error()]
        if not valid:
            return None, None
        deltas, weights = {}, {}
        for r in valid:
            metrics = next(iter(r.content.metric_records.values()))
            pid = self.partition_of(r)
            weights[pid] = float(metrics["num-examples"])
            if "arrays" in r.content.array_records and DELTA_KEY in r.content["arrays"]:
                deltas[pid] = tensor_of(r.content["arrays"], DELTA_KEY)
        arrays = self.update(self._current, deltas, weights)
        return arrays, aggregate_metrics([r.content for r in valid], "num-examples")

    # -- server side ------------------------------------------------------------------

    def server_evaluate(self, server_round: int, arrays: ArrayRecord) -> dict[str, Any]:
        """No global model to test: the payload sizes and which backbone the run used."""
        return {
            **self._bytes,
            "backbone_sha256": self.backbone.sha256,
            "backbone_file": str(self.backbone.path),
        }


class PFedPG(PromptStrategy):
    """Client-specific prompts from the generator; VJP update of the generator."""

    def setup(self, scenario: Scenario, nodes: list[NodeInfo]) -> None:
        """Also keep one generator module to load the global arrays into."""
        super().setup(scenario, nodes)
        self.generator = new_generator(scenario)
        lr = PFedPGParams.model_validate(scenario.algorithm.params).generator_lr
        self.lr = 1.0 / scenario.clients.per_round() if lr is None else lr

    def initial_arrays(self) -> ArrayRecord:
        """The generator's initial state (P_base, descriptors, W_Q, W_K, W_V, W_O)."""
        return model_to_arrays(new_generator(self.scenario))

    def prompts_for(self, arrays: ArrayRecord, partition_id: int) -> torch.Tensor | None:
        """P_n = G(P_base, d_n)."""
        load_arrays(self.generator, arrays)
        with torch.no_grad():
            return self.generator(partition_id)

    def update(
        self, arrays: ArrayRecord, deltas: dict[int, torch.Tensor], weights: dict[int, float]
    ) -> ArrayRecord:
        """theta <- theta - alpha sum_n J_n^T (-Delta_n)."""
        load_arrays(self.generator, arrays)
        generator_step(self.generator, deltas, self.lr)
        return model_to_arrays(self.generator)


class PBaseOnly(PFedPG):
    """Ablation: every client gets P_base; only P_base is updated."""

    def prompts_for(self, arrays: ArrayRecord, partition_id: int) -> torch.Tensor | None:
        """P_base for everyone."""
        return tensor_of(arrays, "base")

    def update(
        self, arrays: ArrayRecord, deltas: dict[int, torch.Tensor], weights: dict[int, float]
    ) -> ArrayRecord:
        """P_base <- P_base - alpha sum_n (-Delta_n)."""
        load_arrays(self.generator, arrays)
        generator_step(self.generator, deltas, self.lr, base_only=True)
        return model_to_arrays(self.generator)


class FedVPT(PromptStrategy):
    """One shared prompt set averaged with FedAvg; heads stay local."""

    def initial_arrays(self) -> ArrayRecord:
        """The initial prompts."""
        return prompt_record(initial_prompts(self.scenario))

    def prompts_for(self, arrays: ArrayRecord, partition_id: int) -> torch.Tensor | None:
        """The global prompts."""
        return tensor_of(arrays, PROMPTS_KEY)

    def update(
        self, arrays: ArrayRecord, deltas: dict[int, torch.Tensor], weights: dict[int, float]
    ) -> ArrayRecord:
        """P <- sum_n w_n P_tilde_n = P + sum_n w_n Delta_n, w_n = n_n / sum n."""
        total = sum(weights[n] for n in deltas) or 1.0
        prompts = tensor_of(arrays, PROMPTS_KEY).double()
        for n, delta in deltas.items():
            prompts += delta.double() * (weights[n] / total)
        return prompt_record(prompts.float())


class LocalPrompts(PromptStrategy):
    """No communication of prompts: each client tunes its own from the common start."""

    def initial_arrays(self) -> ArrayRecord:
        """Nothing global."""
        return ArrayRecord()

    def prompts_for(self, arrays: ArrayRecord, partition_id: int) -> torch.Tensor | None:
        """None: the client keeps its prompts."""
        return None


def _register(name: str, cls: type[PromptStrategy], params: type[BaseModel], summary: str) -> None:
    def make(scenario: Scenario, validated: BaseModel) -> PromptStrategy:
        return cls(scenario)

    make.__doc__ = f"Build {name} for a scenario."
    STRATEGIES.register(name, params=params, summary=summary)(make)


_register(
    "pfedpg", PFedPG, PFedPGParams, "client-specific prompts from a server generator (Yang et al. 2023)"
)
_register("pfedpg_base", PBaseOnly, PFedPGParams, "pFedPG ablation: P_base only, generator output unused")
_register("fedvpt", FedVPT, PromptParams, "visual prompts averaged with FedAvg, local heads")
_register("vpt_local", LocalPrompts, PromptParams, "visual prompts and heads tuned locally, no communication")
_register("vpt_head", LocalPrompts, PromptParams, "control: local heads only, prompts never tuned")
