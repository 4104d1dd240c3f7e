"""pFedPG server side and its baselines (Yang et al., ICCV 2023, https://arxiv.org/abs/2308.15367).

Every client holds the same frozen ViT F* (pretrained on a public split no client sees,
see :mod:`fedsim.methods.backbone`) and its own linear head H_n (``context.state``). Only
K x l prompt tokens travel. Five algorithms share one strategy and differ in which
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

One :class:`PromptStrategy`, configured by the variant's server rule (:func:`rule_for`):
:class:`GeneratorRule` (pFedPG, P_base-only), :class:`AveragedPrompts` (FedVPT) or
:class:`LocalPrompts` (local-only, head-only). The method in full: docs/algorithms/pfedpg.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedsim.config import Scenario
from fedsim.methods.pfedpg import (
    DELTA_KEY,
    PROMPTS_KEY,
    PFedPGParams,
    PromptGenerator,
    Variant,
    backbone_of,
    check_model,
    generator_step,
    initial_prompts,
    new_generator,
    prompt_record,
    tensor_of,
)
from fedsim.records import load_arrays, model_to_arrays, record_nbytes
from fedsim.strategies.base import NodeInfo, aggregate_metrics, scalar
from fedsim.strategies.fedavg import FedAvg
from fedsim.workspace import new_model

# ----------------------------------------------------------------------------- server rules


class PromptRule(Protocol):
    """What the server does with prompts: the global arrays, each client's prompts, the update."""

    def initial_arrays(self, scenario: Scenario) -> ArrayRecord:
        """The global arrays before round 1."""
        ...

    def prompts_for(self, arrays: ArrayRecord, partition_id: int) -> torch.Tensor | None:
        """The prompts sent to a client (None: the client uses its own)."""
        ...

    def update(
        self, arrays: ArrayRecord, deltas: dict[int, torch.Tensor], weights: dict[int, float]
    ) -> ArrayRecord:
        """The new global arrays from this round's Delta_n (by partition id)."""
        ...


class GeneratorRule:
    """The generator's state is global; a VJP step of -Delta_n through G (or P_base alone)."""

    def __init__(self, scenario: Scenario, base_only: bool) -> None:
        self.generator: PromptGenerator = new_generator(scenario)
        lr = PFedPGParams.model_validate(scenario.algorithm.params).generator_lr
        self.lr = 1.0 / scenario.clients.per_round() if lr is None else lr
        self.base_only = base_only

    def initial_arrays(self, scenario: Scenario) -> ArrayRecord:
        """The generator's initial state (P_base, descriptors, W_Q, W_K, W_V, W_O)."""
        return model_to_arrays(new_generator(scenario))

    def prompts_for(self, arrays: ArrayRecord, partition_id: int) -> torch.Tensor | None:
        """P_n = G(P_base, d_n); P_base for everyone when ``base_only``."""
        if self.base_only:
            return tensor_of(arrays, "base")
        load_arrays(self.generator, arrays)
        with torch.no_grad():
            return self.generator(partition_id)

    def update(
        self, arrays: ArrayRecord, deltas: dict[int, torch.Tensor], weights: dict[int, float]
    ) -> ArrayRecord:
        """theta <- theta - alpha sum_n J_n^T (-Delta_n) (J = I on P_base when ``base_only``)."""
        load_arrays(self.generator, arrays)
        generator_step(self.generator, deltas, self.lr, base_only=self.base_only)
        return model_to_arrays(self.generator)


class AveragedPrompts:
    """One shared prompt set averaged with FedAvg; heads stay local."""

    def initial_arrays(self, scenario: Scenario) -> ArrayRecord:
        """The initial prompts."""
        return prompt_record(initial_prompts(scenario))

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


class LocalPrompts:
    """No communication of prompts: each client keeps its own from the common start."""

    def initial_arrays(self, scenario: Scenario) -> ArrayRecord:
        """Nothing global."""
        return ArrayRecord()

    def prompts_for(self, arrays: ArrayRecord, partition_id: int) -> torch.Tensor | None:
        """None: the client keeps its prompts."""
        return None

    def update(
        self, arrays: ArrayRecord, deltas: dict[int, torch.Tensor], weights: dict[int, float]
    ) -> ArrayRecord:
        """No update."""
        return arrays


def rule_for(variant: Variant, scenario: Scenario) -> PromptRule:
    """The server rule of a variant, from what its clients receive."""
    if variant.sends in ("generated", "base"):
        return GeneratorRule(scenario, base_only=variant.sends == "base")
    if variant.sends == "global":
        return AveragedPrompts()
    return LocalPrompts()


# ----------------------------------------------------------------------------- the strategy


class PromptStrategy(FedAvg):
    """Sampling and metrics of FedAvg; prompts per client (by the variant's rule) instead of a model."""

    replies_are_the_model = False  # replies are checked for NaN/Inf only

    stateful_clients = True

    def __init__(self, scenario: Scenario, variant: Variant) -> None:
        super().__init__(scenario)
        self.variant = variant

    def setup(self, scenario: Scenario, nodes: list[NodeInfo]) -> None:
        """Check the model, make sure the backbone exists, measure the payloads, build the rule."""
        super().setup(scenario, nodes)
        check_model(scenario)
        self.backbone = backbone_of(scenario)
        self._bytes = {
            "prompt_bytes_per_client": record_nbytes(
                RecordDict({PROMPTS_KEY: prompt_record(initial_prompts(scenario))})
            ),
            "full_model_bytes_per_client": record_nbytes(
                RecordDict({"arrays": model_to_arrays(new_model(scenario))})
            ),
        }
        self.rule = rule_for(self.variant, scenario)

    def initial_arrays(self) -> ArrayRecord:
        """The rule's global arrays before round 1."""
        return self.rule.initial_arrays(self.scenario)

    # -- messages ---------------------------------------------------------------------

    def _content(self, arrays: ArrayRecord, config: ConfigRecord, partition_id: int) -> RecordDict:
        content = RecordDict({"config": config})
        prompts = self.rule.prompts_for(arrays, partition_id)
        if prompts is not None:
            content[PROMPTS_KEY] = prompt_record(prompts)
        return content

    def train_content(self, server_round: int, arrays: ArrayRecord, node: NodeInfo) -> RecordDict:
        """Only the prompts of this client (and the config) go down."""
        self._current = arrays
        return self._content(arrays, self._shared_content.config_records["config"], node.partition_id)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        """Each client evaluates with its own (freshly generated) prompts and its head."""
        out = []
        for msg in super().configure_evaluate(server_round, arrays, config, grid):
            pid = self._pid_of[msg.metadata.dst_node_id]
            content = self._content(arrays, msg.content.config_records["config"], pid)
            out.append(
                Message(content, dst_node_id=msg.metadata.dst_node_id, message_type=msg.metadata.message_type)
            )
        return out

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Apply the rule's update with every reply's Delta_n, in partition order."""
        valid = [r for r in self.ordered(replies) if not r.has_error()]
        if not valid:
            return None, None
        deltas, weights = {}, {}
        for r in valid:
            metrics = next(iter(r.content.metric_records.values()))
            pid = self.partition_of(r)
            weights[pid] = scalar(metrics["num-examples"])
            arrays = r.content.array_records.get("arrays")
            if arrays is not None and DELTA_KEY in arrays:
                deltas[pid] = tensor_of(arrays, DELTA_KEY)
        return self.rule.update(self._current, deltas, weights), aggregate_metrics(
            [r.content for r in valid], "num-examples"
        )

    # -- server side ------------------------------------------------------------------

    def server_evaluate(self, server_round: int, arrays: ArrayRecord) -> dict[str, Any]:
        """No global model to test: the payload sizes and which backbone the run used."""
        return {
            **self._bytes,
            "backbone_sha256": self.backbone.sha256,
            "backbone_file": str(self.backbone.path),
        }
