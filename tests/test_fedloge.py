"""FedLoGe: SSE-C generation, GLA-FR, the local head's privacy and persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from rich.console import Console
from torch import nn

from fedsim.methods.fedloge import (
    generate_ssec,
    local_logits,
    max_neighbour_cosine,
    realign_generic,
    realign_local,
)

QUIET = Console(quiet=True)


def min_angle(m: torch.Tensor) -> float:
    return float(torch.arccos(max_neighbour_cosine(m.double()).clamp(-1, 1)).min())


def test_ssec_column_norms_reach_target_with_authors_steps() -> None:
    m, _, start = generate_ssec(32, 10, seed=7, steps=10_000)
    torch.testing.assert_close(m.norm(dim=0), torch.full((10,), 0.1), atol=0.005, rtol=0)
    assert min_angle(m) > min_angle(start)


@pytest.mark.parametrize(("d", "c"), [(32, 10), (48, 12)])
def test_ssec_sparsity_angles_determinism(d: int, c: int) -> None:
    m, mask, _ = generate_ssec(d, c, seed=7, steps=500)
    assert int((m == 0).sum()) == int(np.floor(0.6 * d * c))
    assert torch.equal(m == 0, ~mask)  # zeros stay exactly where the mask put them
    random = torch.from_numpy(np.random.default_rng([7, 0x55EC]).uniform(0, 1, size=(d, c)))
    assert min_angle(m) > min_angle(random)
    again, _, _ = generate_ssec(d, c, seed=7, steps=500)
    assert torch.equal(m, again)
    other, _, _ = generate_ssec(d, c, seed=8, steps=500)
    assert not torch.equal(m, other)


def test_ssec_needs_d_at_least_c() -> None:
    with pytest.raises(ValueError, match="d >= classes"):
        generate_ssec(5, 10, seed=0, steps=1)


def test_gla_fr_generic_on_hand_made_tensors() -> None:
    psi = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    torch.testing.assert_close(realign_generic(psi), torch.tensor([[1.02, 1.36], [0.0, 1.7]]))


def test_gla_fr_local_on_hand_made_tensors() -> None:
    phi = nn.Linear(2, 3)
    psi = nn.Linear(2, 3)
    with torch.no_grad():
        phi.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0]]))  # row norms 5, 1, 1
        phi.bias.zero_()
        psi.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
        psi.bias.copy_(torch.tensor([0.5, 0.0, 0.0]))
    torch.testing.assert_close(
        realign_local(phi.weight, psi.weight), torch.tensor([[5.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    )
    z = torch.tensor([[1.0, 1.0]])
    present = torch.tensor([True, True, False])
    out = local_logits(z, phi, psi, present)
    # phi(z) = [7, 1, 1]; psi_k(z) + b = [5.5, 2, 2]; class 2 masked
    assert out[0, 0].item() == pytest.approx(12.5) and out[0, 1].item() == pytest.approx(3.0)
    assert out[0, 2].item() < -1e8


def fedloge_scenario(write_scenario, **extra):
    base = {
        "algorithm": {"name": "fedloge", "ssec_steps": 200},
        "data": {"long_tail": {"imbalance_factor": 5}},
        "clients": {"num": 2, "fraction": 1.0},
        "rounds": 3,
    }
    base.update(extra)
    return write_scenario(base)


def test_local_head_never_leaves_the_client_and_ssec_is_frozen(write_scenario) -> None:
    from fedsim.algorithms import build_strategy
    from fedsim.clients.app import app
    from fedsim.loader import load_scenario
    from fedsim.methods.fedloge import params_of, worker_net
    from fedsim.records import array_view
    from fedsim.runtimes.inprocess import InProcessGrid

    sc = load_scenario(fedloge_scenario(write_scenario))
    grid = InProcessGrid(app, 2, {"scenario": sc.to_json()})
    strategy = build_strategy(sc)
    strategy.setup(sc, [])
    arrays = strategy.initial_arrays()
    ssec_before = worker_net(sc).ssec.clone()
    msg = Message(
        RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})}),
        dst_node_id=next(iter(grid.get_node_ids())),
        message_type=MessageType.TRAIN,
    )
    (reply,) = grid.send_and_receive([msg])
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    sent = reply.content["arrays"]
    assert set(sent.keys()) == set(arrays.keys())
    assert all(k.startswith(("features.", "psi.")) for k in sent)
    state = grid.client_states()[0]
    phi = {k: array_view(v) for k, v in state["fedloge.phi"].items()}
    for value in sent.values():  # no array of the reply equals the local head's
        assert all(
            array_view(value).shape != p.shape or not np.allclose(array_view(value), p) for p in phi.values()
        )
    assert "phi" not in json.dumps(list(reply.content.keys()))
    net = worker_net(sc)
    assert torch.equal(net.ssec, ssec_before)  # frozen through local training
    assert not any(p is net.ssec for p in net.parameters())
    assert params_of(sc).sparsity == 0.6


def head_ages(run: Path) -> list[tuple[int, int, int]]:
    rows = [json.loads(x) for x in (run / "clients.jsonl").read_text().splitlines()]
    return sorted(
        (r["round"], r["partition_id"], r["local_head_rounds"]) for r in rows if r["phase"] == "train"
    )


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["inprocess", "ray"])
def test_local_head_persists_across_rounds(write_scenario, runtime: str) -> None:
    from fedsim.runner import start_run

    rounds = 3 if runtime == "inprocess" else 2
    path = fedloge_scenario(write_scenario, rounds=rounds)
    folder, summary = start_run(path, [f"runtime.name={runtime}"], None, False, False, QUIET)
    assert summary["status"] == "completed"
    assert head_ages(folder.path) == [(r, p, r) for r in range(1, rounds + 1) for p in (0, 1)]
    last = json.loads((folder.path / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("server_accuracy", "server_ssec_accuracy", "clients_accuracy", "server_accuracy_tail"):
        assert 0.0 <= last[key] <= 1.0


@pytest.mark.slow
def test_shipped_digits_lt_comparison_runs_through_cli(tmp_path: Path) -> None:
    from tests.helpers import cli

    root = Path(__file__).parents[1]
    res = cli(
        "run", str(root / "scenarios" / "fedloge_vs_fedavg_digits_lt.yaml"), "--quiet",
        "--set", "sweep.seed=[0]",
        "--set", "rounds=1", "--set", f"output.dir={tmp_path}", "--set", "evaluation.server_every=1",
        "--set", "evaluation.clients_every=1",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    (sweep,) = tmp_path.iterdir()
    for name in ("fedloge", "fedavg"):
        run = sweep / "cells" / f"algorithm.name={name},seed=0"
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["round"] == 1 and "server_accuracy_tail" in last and "clients_accuracy" in last
        assert ("clients_accuracy_masked" in last) == (name == "fedavg")
        assert ("clients_accuracy_realigned" in last) == (name == "fedloge")
    res = cli("compare", str(sweep))
    assert res.returncode == 0 and "generic tail" in res.stdout


@pytest.mark.slow
def test_resume_restores_local_heads(write_scenario) -> None:
    from fedsim.runner import resume_run, start_run
    from tests.helpers import final_arrays, rows

    path = fedloge_scenario(write_scenario, rounds=4, output={"checkpoint_every": 2})
    full, _ = start_run(path, [], None, False, False, QUIET)
    part, _ = start_run(path, [], 3, False, False, QUIET)
    _, summary = resume_run(part.path, None, None, False, False, QUIET)
    assert summary["status"] == "completed"
    assert rows(part.path / "clients.jsonl") == rows(full.path / "clients.jsonl")  # local head ages too
    assert rows(part.path / "metrics.jsonl") == rows(full.path / "metrics.jsonl")
    for key, value in final_arrays(full.path).items():
        np.testing.assert_array_equal(value, final_arrays(part.path)[key])


def test_ssec_keeps_a_frozen_random_bias_unless_asked_not_to(write_scenario) -> None:
    from fedsim.loader import load_scenario
    from fedsim.methods.fedloge import build_net

    sc = load_scenario(fedloge_scenario(write_scenario))
    net = build_net(sc)
    d = net.psi.in_features
    assert net.ssec_bias.abs().max() <= d**-0.5 and net.ssec_bias.abs().min() > 0  # nn.Linear's init
    assert torch.equal(net.ssec_bias, build_net(sc).ssec_bias)  # from the run's seed
    assert not any(p is net.ssec_bias for p in net.parameters()) and "ssec_bias" not in net.state_dict()
    z = torch.randn(4, d)
    torch.testing.assert_close(net.ssec_logits(z), z @ net.ssec.T + net.ssec_bias)
    plain = build_net(load_scenario(fedloge_scenario(write_scenario), ["algorithm.ssec_bias=false"]))
    assert torch.count_nonzero(plain.ssec_bias) == 0


def test_local_evaluation_on_the_authors_terms(write_scenario) -> None:
    """Masked by the classes of the client's local test set; phi + psi, and realigned beside."""
    from fedsim.algorithms import build_strategy
    from fedsim.clients.app import app
    from fedsim.clients.fedloge import local_head
    from fedsim.loader import load_scenario
    from fedsim.methods.fedloge import build_net
    from fedsim.metrics import local_class_groups, mask_absent
    from fedsim.records import load_arrays
    from fedsim.runtimes.inprocess import InProcessGrid
    from fedsim.workspace import client_data

    path = fedloge_scenario(write_scenario, data={"partition": {"name": "dirichlet", "alpha": 0.2}})
    sc = load_scenario(path)
    data = [client_data(sc, k) for k in (0, 1)]
    # the two masks differ: a class with a few training samples has no local test sample
    assert any(set(d.y_train.tolist()) - set(d.y_test.tolist()) for d in data), (
        "pick a partition where they differ"
    )
    grid = InProcessGrid(app, 2, {"scenario": sc.to_json()})
    strategy = build_strategy(sc)
    strategy.setup(sc, [])
    arrays = strategy.initial_arrays()
    nodes = sorted(grid.get_node_ids())
    cfg = ConfigRecord({"server-round": 1})
    train = Message(
        RecordDict({"arrays": arrays, "config": cfg}), dst_node_id=nodes[0], message_type=MessageType.TRAIN
    )
    (reply,) = grid.send_and_receive([train])
    assert not reply.has_error()
    evals = [
        Message(
            RecordDict({"arrays": arrays, "config": cfg}), dst_node_id=n, message_type=MessageType.EVALUATE
        )
        for n in nodes
    ]
    replies = sorted(grid.send_and_receive(evals), key=lambda m: m.metadata.src_node_id)
    net = build_net(sc)
    load_arrays(net, arrays)
    net.eval()
    state = grid.client_states()
    for k, rep in enumerate(replies):
        got = rep.content["metrics"]
        x, y = data[k].x_test, data[k].y_test
        # client 0 trained its head; client 1 never trained: its fresh head, seeded by (seed, client)
        phi, _ = local_head(_ctx(state.get(k)), net.psi.in_features, net.psi.out_features, sc.seed, k)
        with torch.no_grad():
            z = net.features(x)
            present = torch.bincount(y, minlength=10) > 0
            plain = mask_absent(phi(z) + net.psi(z), present).argmax(1)
            realigned = local_logits(z, phi, net.psi, present).argmax(1)
        assert got["accuracy"] == pytest.approx(float((plain == y).float().mean()))
        assert got["accuracy-realigned"] == pytest.approx(float((realigned == y).float().mean()))
        groups = local_class_groups(y, 10)  # this client's own distribution
        for g, classes in groups.items():
            sel = torch.isin(y, classes)
            if sel.any():
                assert got[f"accuracy-{g}"] == pytest.approx(float((plain[sel] == y[sel]).float().mean()))
            else:
                assert np.isnan(got[f"accuracy-{g}"])
        assert got["has-local-head"] == float(k == 0)


def _ctx(state: RecordDict | None):
    from flwr.app import Context

    return Context(run_id=1, node_id=0, node_config={}, state=state or RecordDict(), run_config={})


@pytest.mark.slow
def test_run_rows_report_the_unweighted_client_mean(write_scenario) -> None:
    from fedsim.runner import start_run

    folder, _ = start_run(fedloge_scenario(write_scenario, rounds=1), [], None, False, False, QUIET)
    last = json.loads((folder.path / "metrics.jsonl").read_text().splitlines()[-1])
    rows = [json.loads(x) for x in (folder.path / "clients.jsonl").read_text().splitlines()]
    ev = [r for r in rows if r["phase"] == "evaluate" and r["round"] == 1]
    assert last["clients_accuracy"] == pytest.approx(np.mean([r["accuracy"] for r in ev]))
    n = sum(r["num_examples"] for r in ev)
    assert last["clients_accuracy_weighted"] == pytest.approx(
        sum(r["accuracy"] * r["num_examples"] for r in ev) / n
    )
    assert last["clients_accuracy_realigned"] == pytest.approx(np.mean([r["accuracy_realigned"] for r in ev]))
    for r in ev:  # an empty group of a client is null, never 0
        for g in ("head", "middle", "tail"):
            assert (r[f"accuracy_{g}"] is None) == (r[f"num_examples_{g}"] == 0)
