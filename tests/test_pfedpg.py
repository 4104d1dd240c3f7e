"""pFedPG: generator maths, VPT-shallow insertion, domain styles, pretraining cache, runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from rich.console import Console

from fedsim.data.domains import DomainsParams, client_style, domains, styled
from fedsim.methods.backbone import PretrainRecipe, cached_backbone
from fedsim.methods.pfedpg import PromptGenerator, generator_step
from fedsim.models import build_model

QUIET = Console(quiet=True)
VIT = {"patch_size": 2, "dim": 16, "depth": 1, "heads": 2}


def make_generator(seed: int = 0) -> PromptGenerator:
    return PromptGenerator(num_clients=3, num_prompts=4, dim=8, init_bound=0.3, seed=seed)


# ------------------------------------------------------------------------------ generator


def test_generator_shapes_and_per_client_prompts() -> None:
    gen = make_generator()
    prompts = [gen(n) for n in range(3)]
    assert all(p.shape == (4, 8) for p in prompts)
    assert gen.descriptors.shape == (3, 4, 8) and gen.base.shape == (4, 8)
    assert not torch.allclose(prompts[0], prompts[1])  # client-specific
    again = make_generator()
    assert all(
        torch.equal(a, b) for a, b in zip(gen.state_dict().values(), again.state_dict().values(), strict=True)
    )


def attention_logits(gen: PromptGenerator, client: int) -> torch.Tensor:
    with torch.no_grad():
        return gen.q(gen.descriptors[client]) @ gen.k(gen.base).T / gen.base.shape[1] ** 0.5


def test_logit_std_sets_the_spread_of_the_initial_attention() -> None:
    """Default init: near-uniform attention; logit_std s: logits with std ~ s, distinct prompts."""
    bound = 0.15  # VPT's bound for patch 8 on RGB, dim 64
    plain = PromptGenerator(num_clients=4, num_prompts=16, dim=64, init_bound=bound, seed=0)
    spread = PromptGenerator(num_clients=4, num_prompts=16, dim=64, init_bound=bound, seed=0, logit_std=2.0)
    plain_logits = torch.stack([attention_logits(plain, n) for n in range(4)])
    spread_logits = torch.stack([attention_logits(spread, n) for n in range(4)])
    assert float(plain_logits.std()) < 0.1
    assert 1.6 < float(spread_logits.std()) < 2.4
    # same P_base and descriptors (drawn first); only W_Q and W_K differ
    assert torch.equal(plain.base, spread.base) and torch.equal(plain.descriptors, spread.descriptors)
    with torch.no_grad():
        gap_plain = (plain(0) - plain(1)).norm()
        gap_spread = (spread(0) - spread(1)).norm()
    assert gap_spread > 10 * gap_plain


def test_vjp_step_moves_prompts_toward_the_tuned_ones() -> None:
    gen = make_generator()
    with torch.no_grad():
        start = gen(1).clone()
    target = start + torch.linspace(-0.5, 0.5, 32).reshape(4, 8)  # P_tilde_1
    generator_step(gen, {1: target - start}, lr=0.01)
    with torch.no_grad():
        after = gen(1)
    assert (after - target).norm() < (start - target).norm()


def test_vjp_step_equals_sgd_on_half_squared_distance() -> None:
    """J^T (P_n - P_tilde_n) is the gradient of 0.5 ||G(n) - P_tilde_n||^2."""
    gen, ref = make_generator(), make_generator()
    with torch.no_grad():
        target = gen(2) + 0.3
    generator_step(gen, {2: target - gen(2).detach()}, lr=0.05)
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    (0.5 * (ref(2) - target).pow(2).sum()).backward()
    opt.step()
    for (name, a), b in zip(gen.state_dict().items(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_descriptor_of_a_client_moves_only_with_its_own_delta() -> None:
    gen = make_generator()
    before = gen.descriptors.detach().clone()
    base = gen.base.detach().clone()
    generator_step(gen, {0: torch.ones(4, 8), 2: -torch.ones(4, 8)}, lr=0.1)
    assert torch.equal(gen.descriptors[1], before[1])  # client 1 sent nothing
    assert not torch.equal(gen.descriptors[0], before[0])
    assert not torch.equal(gen.descriptors[2], before[2])
    assert not torch.equal(gen.base, base)


def test_base_only_step_moves_only_p_base_by_the_summed_deltas() -> None:
    gen = make_generator()
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    d0, d1 = torch.full((4, 8), 0.5), torch.full((4, 8), -0.25)
    generator_step(gen, {0: d0, 1: d1}, lr=0.1, base_only=True)
    torch.testing.assert_close(gen.base.detach(), before["base"] + 0.1 * (d0 + d1))
    for key, value in gen.state_dict().items():
        if key != "base":
            assert torch.equal(value, before[key]), key


# ------------------------------------------------------------------------------ ViT


def test_prompts_are_inserted_after_the_class_token() -> None:
    model = build_model("vit", VIT, (1, 8, 8), 10, seed=0)
    enc = model.features
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 8, 8, generator=gen)
    prompts = torch.randn(5, 16, generator=gen)
    plain = enc.tokens(x)
    tokens = enc.tokens(x, prompts)
    assert plain.shape == (3, 1 + 16, 16) and tokens.shape == (3, 1 + 5 + 16, 16)
    torch.testing.assert_close(tokens[:, 0], (enc.cls_token + enc.pos_embed[:, 0]).expand(3, -1, -1)[:, 0])
    assert torch.equal(tokens[:, 1:6], prompts.expand(3, -1, -1))  # no positional embedding on prompts
    assert torch.equal(tokens[:, 6:], plain[:, 1:])
    p = prompts.clone().requires_grad_(True)
    out = enc(x, p)
    assert out.shape == (3, 16) and not torch.allclose(out, enc(x))
    (out * torch.randn(3, 16, generator=gen)).sum().backward()  # (a plain sum of a LayerNorm is constant)
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert model(x).shape == (3, 10)


def test_vit_rejects_a_patch_that_does_not_divide_the_image() -> None:
    with pytest.raises(ValueError, match="patch_size 3 must divide"):
        build_model("vit", {**VIT, "patch_size": 3}, (1, 8, 8), 10, seed=0)


# ------------------------------------------------------------------------------ domains


def test_domains_styles_on_hand_made_images() -> None:
    raw = torch.tensor([[[[0.0, 0.25], [0.5, 1.0]]]])
    mean, std = (0.4,), (0.2,)
    x = (raw - 0.4) / 0.2
    inv = styled(x, "inverted", mean, std, 0.3, (0,))
    torch.testing.assert_close(inv * 0.2 + 0.4, 1.0 - raw)
    rot = styled(x, "rotated", mean, std, 0.3, (0,))
    torch.testing.assert_close(rot * 0.2 + 0.4, torch.tensor([[[[0.25, 1.0], [0.0, 0.5]]]]))
    assert torch.equal(styled(x, "original", mean, std, 0.3, (0,)), x)
    assert styled(x, None, mean, std, 0.3, (0,)) is x
    big = torch.zeros(4000, 1, 4, 4)
    noise = styled(big, "noisy", mean, std, 0.3, (7, 1)) * 0.2  # raw-pixel units
    assert abs(float(noise.std()) - 0.3) < 0.01
    assert torch.equal(noise, styled(big, "noisy", mean, std, 0.3, (7, 1)) * 0.2)
    assert not torch.equal(noise, styled(big, "noisy", mean, std, 0.3, (7, 2)) * 0.2)


def test_domains_partition_and_styles_per_client() -> None:
    labels = np.arange(103) % 10
    parts = domains(labels, 4, DomainsParams(), np.random.default_rng(0))
    assert sorted(np.concatenate(parts).tolist()) == list(range(103))
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    styles = [client_style("domains", {}, k) for k in range(5)]
    assert styles == ["original", "inverted", "rotated", "noisy", "original"]
    assert client_style("iid", {}, 0) is None
    with pytest.raises(ValueError, match="unknown style 'sepia'"):
        DomainsParams(styles=("sepia",))


# ------------------------------------------------------------------------------ pretraining


def test_pretraining_is_cached_by_content() -> None:
    built: list[int] = []

    def build():
        built.append(1)
        return build_model("vit", VIT, (1, 8, 8), 10, seed=0)

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8, generator=gen), torch.arange(40) % 10
    recipe = PretrainRecipe(epochs=2, batch_size=16)
    first = cached_backbone(build, x, y, {"model": "vit"}, recipe, seed=0)
    again = cached_backbone(build, x, y, {"model": "vit"}, recipe, seed=0)
    assert first.pretrained_here and not again.pretrained_here and len(built) == 1
    assert first.path == again.path and first.sha256 == again.sha256
    assert all(torch.equal(first.state[k], again.state[k]) for k in first.state)
    assert set(first.state) == set(build().features.state_dict())  # the encoder only, no head
    other = cached_backbone(build, x, (y + 1) % 10, {"model": "vit"}, recipe, seed=0)
    assert other.pretrained_here and other.path != first.path


# ------------------------------------------------------------------------------ runs

ALGORITHMS = ("pfedpg", "pfedpg_base", "fedvpt", "vpt_local", "vpt_head")


def prompt_scenario(tmp_path: Path, algorithm: str = "pfedpg", **extra) -> Path:
    """A tiny prompt-tuning scenario (4 domain clients, a 1-block ViT) written under tmp_path."""
    from tests.conftest import TINY

    algo = {"name": algorithm, "num_prompts": 4, "pretrain_epochs": 3}
    if algorithm.startswith("pfedpg"):
        algo["generator_lr"] = 0.5
    data = {
        **TINY,
        "model": {"name": "vit", **VIT},
        "algorithm": algo,
        "data": {"dataset": "digits", "partition": {"name": "domains"}},
        "clients": {"num": 4, "fraction": 1.0, "min": 1},
        "train": {"local_epochs": 1, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.25}},
        "rounds": 2,
        "output": {"dir": str(tmp_path / "runs"), "checkpoint_every": 1},
        **extra,
    }
    path = tmp_path / f"{algorithm}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def client_rows(run: Path, phase: str) -> list[dict]:
    rows = [json.loads(x) for x in (run / "clients.jsonl").read_text().splitlines()]
    return [r for r in rows if r["phase"] == phase]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_tiny_runs_keep_backbone_heads_and_count_bytes(tmp_path: Path, algorithm: str) -> None:
    from fedsim.loader import load_scenario
    from fedsim.methods.backbone import file_sha256
    from fedsim.methods.pfedpg import backbone_of, frozen_encoder
    from fedsim.runner import start_run

    path = prompt_scenario(tmp_path, algorithm)
    folder, summary = start_run(path, [], None, False, False, QUIET)
    assert summary["status"] == "completed"
    sc = load_scenario(path)
    backbone = backbone_of(sc)
    assert file_sha256(backbone.path) == backbone.sha256 == summary["final"]["backbone_sha256"]
    encoder = frozen_encoder(sc)  # the very module the clients ran, bit-identical to the file
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, backbone.state[key]), key
    assert not any(p.requires_grad for p in encoder.parameters())
    train = client_rows(folder.path, "train")
    assert sorted((r["round"], r["partition_id"], r["local_head_rounds"]) for r in train) == [
        (r, p, r) for r in (1, 2) for p in range(4)
    ]  # heads persist across rounds in context.state
    final = summary["final"]
    prompt_bytes, full_bytes = final["prompt_bytes_per_client"], final["full_model_bytes_per_client"]
    assert prompt_bytes < full_bytes / 20
    for row in train:
        tuned = row["prompt_delta_norm"] > 0  # the head-only control never moves its prompts
        assert tuned == (algorithm != "vpt_head"), row
        if algorithm in ("vpt_local", "vpt_head"):  # nothing but the config goes down, metrics up
            assert row["bytes_down"] < 200 and row["bytes_up"] < 400
        else:  # K x dim float32 each way (+ npy header, config and metrics)
            assert prompt_bytes <= row["bytes_down"] < prompt_bytes + 200
            assert 4 * 4 * 16 < row["bytes_up"] < prompt_bytes + 400
    evaluate = client_rows(folder.path, "evaluate")
    assert len(evaluate) == 8 and all(0.0 <= r["accuracy"] <= 1.0 for r in evaluate)
    assert 0.0 <= final["clients_accuracy"] <= 1.0
    assert (folder.path / "report.html").is_file()


def test_clients_never_see_the_public_split(tmp_path: Path) -> None:
    from fedsim.loader import load_scenario
    from fedsim.methods.pfedpg import prompt_client_data, public_split
    from fedsim.workspace import federated_data

    sc = load_scenario(
        prompt_scenario(tmp_path, "fedvpt", data={"partition": {"name": "dirichlet", "alpha": 0.1}})
    )
    fed = federated_data(sc)
    public = public_split(sc)
    assert len(public) == int(np.ceil(0.3 * len(fed.dataset.y_train)))
    sizes = [len(prompt_client_data(sc, k).y_train) for k in range(4)]
    assert sum(sizes) == len(fed.dataset.y_train) - len(public)  # every other sample used once
    for k in range(4):  # exactly the client's partition minus the public samples
        own = np.setdiff1d(fed.train_indices[k], public)
        x = prompt_client_data(sc, k).x_train
        assert torch.equal(x, fed.dataset.x_train[torch.from_numpy(own)])
        assert len(own) == len(fed.train_indices[k]) - len(np.intersect1d(fed.train_indices[k], public))


def test_scenario_attention_logit_std_reaches_the_generator(tmp_path: Path) -> None:
    from fedsim.loader import load_scenario
    from fedsim.methods.pfedpg import initial_prompts, new_generator

    path = prompt_scenario(tmp_path, "pfedpg")
    plain = new_generator(load_scenario(path))
    spread = new_generator(load_scenario(path, ["algorithm.attention_logit_std=3.0"]))
    assert float(attention_logits(plain, 0).std()) < 0.3
    assert float(attention_logits(spread, 0).std()) > 1.0
    # the other variants start from the same P_base whatever the attention init
    torch.testing.assert_close(spread.base.detach(), initial_prompts(load_scenario(path)))


def test_fedvpt_averages_deltas_by_sample_count(tmp_path: Path) -> None:
    from fedsim.loader import load_scenario
    from fedsim.methods.pfedpg import VARIANTS, prompt_record, tensor_of
    from fedsim.strategies.pfedpg import AveragedPrompts, rule_for

    sc = load_scenario(prompt_scenario(tmp_path, "fedvpt"))
    rule = rule_for(VARIANTS["fedvpt"], sc)
    assert isinstance(rule, AveragedPrompts)
    start = torch.zeros(4, 16)
    new = rule.update(prompt_record(start), {0: torch.ones(4, 16), 1: torch.full((4, 16), 4.0)}, {0: 3, 1: 1})
    torch.testing.assert_close(tensor_of(new, "prompts"), torch.full((4, 16), 0.75 * 1 + 0.25 * 4))


def test_prompt_algorithms_need_an_existing_backbone_and_a_vit(tmp_path: Path) -> None:
    from tests.helpers import cli

    path = prompt_scenario(tmp_path, "fedvpt")
    res = cli("run", str(path), "--quiet", "--set", f"algorithm.backbone={tmp_path / 'nope.pt'}")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "algorithm.backbone" in res.stderr and "expected a file written by 'fedsim pretrain'" in res.stderr
    assert not (tmp_path / "runs").exists()  # rejected before anything is written
    path = prompt_scenario(tmp_path, "pfedpg", model={"name": "cnn"})
    res = cli("run", str(path), "--quiet")
    assert res.returncode == 2
    assert "needs a prompt-taking ViT as model.name" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_pretrain_command_and_a_run_with_the_users_checkpoint(tmp_path: Path) -> None:
    import os

    from tests.helpers import cli, only_run

    path = prompt_scenario(tmp_path, "pfedpg", rounds=1)
    out = tmp_path / "vit.pt"
    env_cache = os.environ["FEDSIM_CACHE"]
    res = cli("pretrain", str(path), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert out.is_file() and "sha256" in res.stdout
    again = cli("pretrain", str(path))
    assert "found in the cache" in again.stdout
    res = cli("run", str(path), "--quiet", "--set", f"algorithm.backbone={out}")
    assert res.returncode == 0, res.stderr
    run = only_run(tmp_path / "runs")
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["backbone_file"] == str(out) and len(last["backbone_sha256"]) == 64
    assert Path(env_cache).is_dir()


@pytest.mark.slow
def test_resume_restores_generator_and_heads(tmp_path: Path) -> None:
    from fedsim.runner import resume_run, start_run
    from tests.helpers import final_arrays, rows

    path = prompt_scenario(tmp_path, "pfedpg", rounds=3, output={"checkpoint_every": 1})
    full, _ = start_run(path, [], None, False, False, QUIET)
    part, _ = start_run(path, [], 2, False, False, QUIET)
    _, summary = resume_run(part.path, None, None, False, False, QUIET)
    assert summary["status"] == "completed"
    assert rows(part.path / "clients.jsonl") == rows(full.path / "clients.jsonl")
    assert rows(part.path / "metrics.jsonl") == rows(full.path / "metrics.jsonl")
    for key, value in final_arrays(full.path).items():
        np.testing.assert_array_equal(value, final_arrays(part.path)[key])


@pytest.mark.slow
def test_shipped_sweep_runs_both_settings_through_cli(tmp_path: Path) -> None:
    """scenarios/pfedpg_digits.yaml narrowed to pFedPG and one seed: both settings."""
    from tests.helpers import cli

    root = Path(__file__).parents[1]
    res = cli(
        "run", str(root / "scenarios" / "pfedpg_digits.yaml"), "--quiet",
        "--set", "sweep.algorithm=[{name: pfedpg}]", "--set", "sweep.seed=[0]",
        "--set", "rounds=1", "--set", f"output.dir={tmp_path}", "--set", "algorithm.pretrain_epochs=1",
        "--set", "train.local_epochs=1",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    (sweep,) = tmp_path.iterdir()
    for setting, clients in (("domains", 4), ("dir01", 10)):
        run = sweep / "cells" / f"case={setting},algorithm.name=pfedpg,seed=0"
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["round"] == 1 and last["clients_ok"] == clients and 0 <= last["clients_accuracy"] <= 1
    res = cli("compare", "--by-algorithm", str(sweep))
    assert res.returncode == 0 and "local" in res.stdout and "pfedpg (n=2)" in res.stdout
