"""Cohort training (torch.func) gives each client what training it alone gives, within 1e-5."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from rich.console import Console

from fedsim.algorithms import cohort_plan
from fedsim.clients import cohort as clients_cohort
from fedsim.clients.fedprox import proximal_loss
from fedsim.cohort import ClientJob, activation_bytes, chunk_size, train_cohort, unsupported_layer
from fedsim.config import OptimizerSpec
from fedsim.errors import UserError
from fedsim.loader import load_scenario
from fedsim.methods.fedloge import FedLoGeNet, LocalTraining, local_loss
from fedsim.models import build_model
from fedsim.runner import start_run
from fedsim.training import cross_entropy, make_optimizer, train_epochs
from tests.conftest import merge

SIZES = [23, 23, 17, 40, 23, 5, 17]  # three groups of equal sizes, and two clients alone


def clients(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)) for n in SIZES]


def one_by_one(model, data, spec: OptimizerSpec, epochs: int, mu: float = 0.0):
    start = copy.deepcopy(model.state_dict())
    out = []
    for k, (x, y) in enumerate(data):
        model.load_state_dict(start)
        global_params = [p.detach().clone() for p in model.parameters()]
        loss_fn = proximal_loss(global_params, mu) if mu else cross_entropy
        stats = train_epochs(
            model,
            x,
            y,
            epochs=epochs,
            batch_size=10,
            optimizer=make_optimizer(model.parameters(), spec),
            generator=torch.Generator().manual_seed(100 + k),
            loss_fn=loss_fn,
        )
        out.append(({n: v.clone() for n, v in model.state_dict().items()}, stats))
    model.load_state_dict(start)
    return out


@pytest.mark.parametrize(
    ("spec", "mu"),
    [
        (OptimizerSpec(name="sgd", lr=0.05), 0.0),
        (OptimizerSpec(name="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3), 0.0),
        (OptimizerSpec(name="adam", lr=0.01, weight_decay=1e-4), 0.0),
        (OptimizerSpec(name="sgd", lr=0.05, momentum=0.5), 0.1),
    ],
    ids=["sgd", "momentum-wd", "adam", "fedprox"],
)
def test_a_cohort_trains_each_client_as_it_would_alone(spec: OptimizerSpec, mu: float) -> None:
    model = build_model("cnn", {}, (3, 16, 16), 10, 0)
    data = clients()
    alone = one_by_one(model, data, spec, epochs=2, mu=mu)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    jobs = [ClientJob(x, y, torch.Generator().manual_seed(100 + k)) for k, (x, y) in enumerate(data)]
    together = train_cohort(
        model, model.state_dict(), jobs, epochs=2, batch_size=10, optimizer=spec, prox_mu=mu
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # model untouched
    assert len(together) == len(SIZES)
    for (w_alone, s_alone), (w_cohort, s_cohort) in zip(alone, together, strict=True):
        assert w_cohort.keys() == w_alone.keys()
        moved = max(float((w_alone[k] - before[k]).abs().max()) for k in w_alone)
        assert moved > 1e-3  # the clients did train
        gaps = torch.cat([(w_alone[k] - w_cohort[k]).abs().reshape(-1) for k in w_alone])
        if spec.name == "adam":
            # Adam divides by sqrt(v): where a gradient is ~1e-9, its float rounding (the cohort's
            # batched convolutions add in another order) becomes a step of up to lr. At most one
            # weight in 10,000 differs by more than 1e-5; all others agree as with SGD.
            assert int((gaps > 1e-5).sum()) <= len(gaps) // 10_000 and float(gaps.max()) < spec.lr / 10
        else:
            assert float(gaps.max()) < 1e-5
        assert s_cohort.num_examples == s_alone.num_examples
        assert s_cohort.loss == pytest.approx(s_alone.loss, abs=1e-5)
        assert s_cohort.accuracy == s_alone.accuracy


def test_batchnorm_statistics_are_kept_per_client_and_chunks_change_nothing() -> None:
    spec = OptimizerSpec(name="sgd", lr=0.05, momentum=0.9)
    model = build_model("cnn", {"batch_norm": True}, (3, 16, 16), 10, 0)
    assert unsupported_layer(model) is None
    data = clients(1)
    alone = one_by_one(model, data, spec, epochs=2)
    jobs = [ClientJob(x, y, torch.Generator().manual_seed(100 + k)) for k, (x, y) in enumerate(data)]
    whole = train_cohort(model, model.state_dict(), jobs, epochs=2, batch_size=10, optimizer=spec)
    jobs = [ClientJob(x, y, torch.Generator().manual_seed(100 + k)) for k, (x, y) in enumerate(data)]
    chunked = train_cohort(model, model.state_dict(), jobs, epochs=2, batch_size=10, optimizer=spec, chunk=3)
    stats = [k for k in alone[0][0] if "running" in k or "num_batches" in k]
    assert len(stats) == 6  # two BatchNorm layers: mean, var, count
    for (w_alone, _), (w_whole, _), (w_chunk, _) in zip(alone, whole, chunked, strict=True):
        for k in w_alone:
            assert float((w_alone[k].double() - w_whole[k].double()).abs().max()) < 1e-5, k
            assert float((w_whole[k].double() - w_chunk[k].double()).abs().max()) < 1e-6, k
    # each client's statistics are its own: 23 samples take 3 steps, 40 take 4, 5 take 1
    counts = [int(w["features.0.1.num_batches_tracked"]) for w, _ in whole]
    assert counts == [6, 6, 4, 8, 6, 2, 4]
    assert not torch.equal(whole[0][0]["features.0.1.running_mean"], whole[1][0]["features.0.1.running_mean"])


def test_fedloge_backbone_and_each_local_head_train_as_alone() -> None:
    base = build_model("cnn", {}, (3, 16, 16), 10, 0)
    g = torch.Generator().manual_seed(5)
    net = FedLoGeNet(
        base.features, base.feature_dim, 10, torch.randn(10, base.feature_dim, generator=g), torch.zeros(10)
    )
    heads = [torch.nn.Linear(base.feature_dim, 10) for _ in SIZES]  # each client's own phi_k
    spec = OptimizerSpec(name="sgd", lr=0.03, momentum=0.5)
    start = copy.deepcopy(LocalTraining(net, heads[0]).state_dict())
    data = clients(2)
    alone = []
    for k, ((x, y), phi) in enumerate(zip(data, heads, strict=True)):
        model = LocalTraining(net, copy.deepcopy(phi))
        model.load_state_dict({**start, **{f"phi.{n}": v for n, v in phi.state_dict().items()}})
        stats = train_epochs(
            model,
            x,
            y,
            epochs=2,
            batch_size=10,
            optimizer=make_optimizer(model.parameters(), spec),
            generator=torch.Generator().manual_seed(100 + k),
            loss_fn=lambda m, x, y: local_loss(m(x), y),
        )
        alone.append(({n: v.clone() for n, v in model.state_dict().items()}, stats))
    model = LocalTraining(net, heads[0])
    model.load_state_dict(start)
    jobs = [
        ClientJob(
            x, y, torch.Generator().manual_seed(100 + k), {f"phi.{n}": v for n, v in phi.state_dict().items()}
        )
        for k, ((x, y), phi) in enumerate(zip(data, heads, strict=True))
    ]
    together = train_cohort(
        model, start, jobs, epochs=2, batch_size=10, optimizer=spec, criterion=local_loss, chunk=4
    )
    assert not any(k.startswith("net.ssec") for k in start)  # SSE-C is frozen and never sent
    for (w_alone, s_alone), (w_cohort, s_cohort) in zip(alone, together, strict=True):
        assert w_alone.keys() == w_cohort.keys()
        assert max(float((w_alone[k] - w_cohort[k]).abs().max()) for k in w_alone) < 1e-5
        # the sum of three losses of about 4 each: equal within float32 rounding of that sum
        assert (
            s_cohort.loss == pytest.approx(s_alone.loss, rel=1e-5) and s_cohort.accuracy == s_alone.accuracy
        )
    # each client's own head trained from its own start: they stay apart
    assert not torch.allclose(together[0][0]["phi.weight"], together[1][0]["phi.weight"])


class _WithDropout(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.2), torch.nn.Linear(12, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_dropout_is_named_as_what_prevents_a_cohort() -> None:
    model = _WithDropout()
    assert unsupported_layer(model) == "body.1 (Dropout: random numbers outside the client's generator)"
    with pytest.raises(ValueError, match=r"cohort training cannot train layer body\.1 \(Dropout"):
        train_cohort(model, model.state_dict(), [], epochs=1, batch_size=10, optimizer=OptimizerSpec())
    model.body[1].p = 0.0
    assert unsupported_layer(model) is None


def test_the_chunk_follows_the_memory_budget() -> None:
    model = build_model("cnn", {}, (3, 16, 16), 10, 0)
    sgd, adam = OptimizerSpec(), OptimizerSpec(name="adam")
    sample = torch.zeros(3, 16, 16)
    weights = sum(p.numel() * 4 for p in model.parameters())
    activations = activation_bytes(model, sample)
    assert activations > 3 * 16 * 16 * 4  # at least the first convolution's output
    per_client = 4 * weights + activations * 10 * 3
    assert chunk_size(model, sample, 10, sgd, 100) == int(100 * 2**20 // per_client)
    assert chunk_size(model, sample, 10, adam, 100) < chunk_size(model, sample, 10, sgd, 100)
    assert chunk_size(model, sample, 40, sgd, 100) < chunk_size(model, sample, 10, sgd, 100)
    assert chunk_size(model, sample, 10, sgd, 0.01) == 1  # never less than one client


def _run(write_scenario, extra: dict, sets: list[str]):
    folder, summary = start_run(write_scenario(extra), sets, None, False, False, Console(quiet=True))
    return folder, summary


@pytest.mark.parametrize("algorithm", ["fedavg", "fedloge"])
def test_a_vectorised_run_gives_the_per_client_results(
    write_scenario, monkeypatch: pytest.MonkeyPatch, algorithm: str
) -> None:
    extra = {"algorithm": {"name": algorithm}, "rounds": 2}  # Dirichlet: clients of several sizes
    cohorts: list[int] = []  # clients per cohort trained in this process

    def counted(model, start, jobs, **kw):  # type: ignore[no-untyped-def]
        cohorts.append(len(jobs))
        return train_cohort(model, start, jobs, **kw)

    monkeypatch.setattr(clients_cohort, "train_cohort", counted)
    ways = {"off": ["train.vectorise=off"], "on": ["train.vectorise=on"]}
    if algorithm == "fedavg":  # inside each worker of the sharded runtime too
        ways["on-w2"] = ["train.vectorise=on", "runtime.workers=2"]
    runs = {name: _run(write_scenario, extra, sets) for name, sets in ways.items()}
    assert runs["off"][1]["train_path"] == {"vectorised": False, "why": "train.vectorise is off"}
    assert runs["on"][1]["train_path"]["vectorised"] is True
    assert cohorts == [3, 3]  # the "on" run in this process: one cohort of 3 clients a round
    rows = {m: f.read("clients.jsonl") for m, (f, _) in runs.items()}
    metrics = {m: f.read("metrics.jsonl") for m, (f, _) in runs.items()}
    assert [r["phase"] for r in rows["off"]].count("train") == 6  # 3 clients x 2 rounds
    assert [r["phase"] for r in rows["off"]].count("evaluate") == 12  # 6 clients x 2 rounds
    keys = ("round", "phase", "partition_id", "num_examples", "local-head-rounds", "has-local-head")
    accuracies = [k for k in rows["off"][-1] if k.startswith("accuracy")]
    assert len(accuracies) >= 4  # the local accuracies, also per class group
    for name in ways:
        assert runs[name][1]["workers"] == (2 if name == "on-w2" else 1)
        for a, b in zip(rows["off"], rows[name], strict=True):
            assert [a.get(k) for k in keys] == [b.get(k) for k in keys]
            assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
            assert all(b[k] == pytest.approx(a[k], abs=1e-6) for k in accuracies if k in a)
            if name != "on-w2":  # a worker holding one client of a round trains it alone
                assert b.get("cohort_chunk") == {"off": None, "on": 3 if b["phase"] == "train" else 6}[name]
        for a, b in zip(metrics["off"], metrics[name], strict=True):
            assert b.get("server_accuracy") == pytest.approx(a.get("server_accuracy"), abs=1e-4)


def test_vectorise_on_names_what_prevents_it_and_auto_falls_back(write_scenario) -> None:
    cases = [
        (
            {"algorithm": {"name": "pfedpg"}},
            r"algorithm pfedpg has no cohort trainer \(fedavg, fedloge, fedprox have\)",
        ),
        ({"runtime": {"name": "ray"}}, r"runtime ray hands each client its messages one at a time"),
    ]
    for extra, why in cases:
        on = merge(extra, {"train": {"vectorise": "on"}})
        with pytest.raises(
            UserError, match=rf"train\.vectorise is on but {why}.*expected train\.vectorise: auto or off"
        ):
            load_scenario(write_scenario(on))
        plan = cohort_plan(load_scenario(write_scenario(merge(extra, {"train": {"vectorise": "auto"}}))))
        assert plan[0] is False and re.search(why, plan[1])
    # YAML reads a bare off / on as a boolean
    assert load_scenario(write_scenario({"train": {"vectorise": False}})).train.vectorise == "off"
    assert load_scenario(write_scenario({"train": {"vectorise": True}})).train.vectorise == "on"
