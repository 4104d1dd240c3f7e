"""Client of pFedPG and of its baselines (Yang et al., ICCV 2023; docs/algorithms/pfedpg.md).

The client holds the frozen ViT F* (the same pretrained encoder as every other client;
never updated, never sent) and its own linear head H_n in ``context.state``. With
prompts P from the server (pFedPG: P_n; P_base-only: P_base; FedVPT: the global P) it
trains P and H_n with cross-entropy on

    logits = H_n(F*([cls, P, patches]))           (VPT-shallow)

for the scenario's local epochs and optimiser (authors: SGD lr 0.25, weight decay 0.001,
batch 64, 5 epochs), and sends back only Delta_n = P_tilde_n - P. Without prompts in the
message (local-only), it starts from its own prompts in ``context.state`` and keeps
them there. ``vpt_head`` (a control) trains H_n only: the prompts stay at their
initial values. Evaluation: argmax H_n(F*([cls, P, z])) on the local test set, with the
prompts of the evaluate message (or its own).

Data: the client's partition minus the public pretraining split, in its domain's style
when the partition is ``domains`` (:func:`fedsim.methods.pfedpg.prompt_client_data`).
"""

from __future__ import annotations

from functools import partial

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from torch import nn

from fedsim.clients.common import ClientAlgorithm, ClientEnv, client_env, persistent_linear, reply
from fedsim.config import Scenario
from fedsim.devices import placed
from fedsim.methods.pfedpg import (
    DELTA_KEY,
    PROMPTS_KEY,
    Variant,
    frozen_encoder,
    initial_prompts,
    prompt_client_data,
    tensor_of,
)
from fedsim.models.vit import PromptViT
from fedsim.records import state_to_arrays, to_array
from fedsim.training import Stats, evaluate
from fedsim.workspace import federated_data

#: Keys in ``context.state`` (never sent): the local head, the local prompts (local-only),
#: and the number of rounds the head has been trained.
HEAD_KEY = "pfedpg.head"
PROMPT_STATE_KEY = "pfedpg.prompts"
AGE_KEY = "pfedpg.head-age"


class PromptedClassifier(nn.Module):
    """H(F*([cls, P, patches])): a frozen encoder, trainable prompts and head."""

    def __init__(self, encoder: PromptViT, prompts: torch.Tensor, head: nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.prompts = nn.Parameter(prompts.detach().clone())
        self.head = head

    def train(self, mode: bool = True) -> PromptedClassifier:
        """The encoder stays in eval mode."""
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the prompted, frozen encoder and the local head."""
        return self.head(self.encoder(x, self.prompts))


def local_head(context: Context, dim: int, num_classes: int, seed: int, pid: int) -> tuple[nn.Linear, int]:
    """H_n from ``context.state`` (or a fresh one seeded by (seed, client)) and its age in rounds."""
    return persistent_linear(context, HEAD_KEY, AGE_KEY, dim, num_classes, seed, pid, 0x9F)


def start_prompts(msg: Message, context: Context, scenario: Scenario) -> tuple[torch.Tensor, bool]:
    """The prompts to start from and whether they came from the server."""
    if PROMPTS_KEY in msg.content.array_records:
        return tensor_of(msg.content.array_records[PROMPTS_KEY], PROMPTS_KEY), True
    if PROMPT_STATE_KEY in context.state.array_records:
        return tensor_of(context.state.array_records[PROMPT_STATE_KEY], PROMPTS_KEY), False
    return initial_prompts(scenario), False


def _classifier(
    msg: Message, context: Context, env: ClientEnv
) -> tuple[PromptedClassifier, torch.Tensor, bool, int]:
    """The prompted classifier of this call, its start prompts, their origin and the head's age."""
    encoder = frozen_encoder(env.scenario)
    prompts, from_server = start_prompts(msg, context, env.scenario)
    classes = federated_data(env.scenario).dataset.num_classes
    head, age = local_head(context, encoder.dim, classes, env.scenario.seed, env.partition_id)
    return PromptedClassifier(encoder, prompts, head), prompts, from_server, age


def trainable(model: PromptedClassifier, tune_prompts: bool) -> list[nn.Parameter]:
    """What the client tunes: P and H_n, or H_n alone (the head-only control)."""
    head = list(model.head.parameters())
    return [model.prompts, *head] if tune_prompts else head


def train(msg: Message, context: Context, tune_prompts: bool = True) -> Message:
    """Tune P (unless ``tune_prompts`` is off) and H_n; send Delta_n (or keep P when none came)."""
    env = client_env(msg, context)
    data = prompt_client_data(env.scenario, env.partition_id)
    with env.timed():
        model, start, from_server, age = _classifier(msg, context, env)
        stats = env.local_epochs(model, (data.x_train, data.y_train), trainable(model, tune_prompts))
        tuned = model.prompts.detach().clone()
        context.state[HEAD_KEY] = state_to_arrays(model.head.state_dict())
        context.state[AGE_KEY] = ConfigRecord({"rounds": age + 1})
        arrays = None
        if from_server:
            arrays = ArrayRecord({DELTA_KEY: to_array((tuned - start).numpy())})
        else:
            context.state[PROMPT_STATE_KEY] = ArrayRecord({PROMPTS_KEY: to_array(tuned.numpy())})
    extra = {"local-head-rounds": age + 1, "prompt-delta-norm": float((tuned - start).norm())}
    return reply(msg, env, stats, arrays, **extra)


@torch.no_grad()
def evaluate_local(msg: Message, context: Context) -> Message:
    """Accuracy of H_n(F*([cls, P, z])) on the client's local test set."""
    env = client_env(msg, context)
    data = prompt_client_data(env.scenario, env.partition_id)
    with env.timed():
        model, _, _, _ = _classifier(msg, context, env)
        with placed(env.device, model):
            stats = evaluate(model, data.x_test, data.y_test) if len(data.y_test) else Stats(0.0, 0.0, 0)
    return reply(msg, env, stats, **{"has-local-head": float(HEAD_KEY in context.state)})


def handlers(variant: Variant) -> ClientAlgorithm:
    """The client of a variant: the head-only control never tunes its prompts."""
    return ClientAlgorithm(train=partial(train, tune_prompts=variant.tune_prompts), evaluate=evaluate_local)
