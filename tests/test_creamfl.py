"""CreamFL: captions, paired sets, representation-only messages, empty modalities, a tiny run."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from flwr.app import ArrayRecord, ConfigRecord

from fedsim.data.captions import SYNONYMS, caption, encode, tokenize, vocabulary
from fedsim.data.shapes import generate_shapes

P, D = 48, 16


def creamfl_scenario(write_scenario, modalities=("image", "text", "image_text"), **algo) -> Path:
    """A tiny CreamFL scenario (the shared TINY one with its model and data replaced)."""
    path = write_scenario(
        {
            "data": {
                "dataset": "shapes",
                "options": {"image_size": 16, "num_train": 90, "num_test": 40},
                "partition": {"name": "iid"},
                "local_test": False,
            },
            "model": {
                "name": "multimodal",
                "embed_dim": D,
                "image_channels": [4],
                "text_width": 8,
                "server_image_channels": [8],
                "server_text_width": 12,
            },
            "algorithm": {"name": "creamfl", "public_size": P, "modalities": list(modalities), **algo},
            "clients": {"num": 3, "fraction": 1.0, "min": 1},
            "train": {"batch_size": 16, "optimizer": {"name": "adam", "lr": 0.001}},
            "evaluation": {"server_every": 1, "clients_every": 1},
            "rounds": 2,
        }
    )
    raw = yaml.safe_load(path.read_text())
    raw["model"] = {k: v for k, v in raw["model"].items() if k not in ("channels", "feature_dim")}
    raw["data"]["partition"] = {"name": "iid"}
    path.write_text(yaml.safe_dump(raw))
    return path


# ----------------------------------------------------------------------------- captions


def test_captions_name_every_attribute_and_vary() -> None:
    _, _, attrs = generate_shapes(60, 16, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    texts = [caption(a, rng) for a in attrs]
    for text, a in zip(texts, attrs, strict=True):
        for key, options in SYNONYMS.items():
            assert any(f" {w} " in f" {text} " for w in options[a[key]]), (key, text)
    assert len(set(texts)) == len(texts)  # instance-level, not one caption per class
    assert len({x.split()[0] for x in texts}) > 3  # several templates in use
    again = [caption(a, np.random.default_rng(1)) for a in attrs[:1]]
    assert again[0] == texts[0]


def test_vocabulary_covers_every_caption_word() -> None:
    _, _, attrs = generate_shapes(200, 16, np.random.default_rng(2))
    rng = np.random.default_rng(3)
    vocab = vocabulary()
    assert vocab["<pad>"] == 0 and vocab["<unk>"] == 1
    tokens = encode([caption(a, rng) for a in attrs])
    assert tokens.shape == (200, 32) and tokens.dtype == torch.long
    assert int((tokens == 1).sum()) == 0  # no unknown word
    assert int(tokens.max()) < len(vocab)
    assert tokenize("A Red, big Star") == ["a", "red", ",", "big", "star"]
    assert encode(["a zebra"])[0, :2].tolist() == [vocab["a"], 1]
    with pytest.raises(ValueError, match="max_tokens"):
        encode(["a " * 40])


# ------------------------------------------------------------------------- paired data


def test_paired_sets_and_modalities(write_scenario) -> None:
    from fedsim.loader import load_scenario
    from fedsim.methods.creamfl import paired_of

    sc = load_scenario(creamfl_scenario(write_scenario))
    data = paired_of(sc)
    assert data.public.images.shape == (P, 3, 16, 16) and data.public.tokens.shape == (P, 32)
    assert len(data.test) == 40
    assert [data.modality_of(k) for k in range(3)] == ["image", "text", "image_text"]
    img, txt, pair = (data.private(k) for k in range(3))
    assert img.tokens is None and img.images is not None and int(img.labels.max()) < 10
    assert txt.images is None and txt.tokens is not None and int(txt.labels.max()) < 8  # colours
    assert pair.images is not None and pair.tokens is not None
    assert len(img) + len(txt) + len(pair) == 90
    # the public images are not the training images
    assert not any(torch.equal(data.public.images[0], x) for x in data.train.images)


def test_creamfl_needs_shapes_and_the_multimodal_model(write_scenario) -> None:
    from fedsim.algorithms import build_strategy
    from fedsim.errors import UserError
    from fedsim.loader import load_scenario
    from fedsim.methods.creamfl import paired_of

    path = creamfl_scenario(write_scenario)
    sc = load_scenario(path, ["model={name: cnn}"])
    with pytest.raises(UserError, match=r"needs model\.name 'multimodal'"):
        build_strategy(sc)
    sc = load_scenario(path, ["data.dataset=digits", "data.options={}"])
    with pytest.raises(UserError, match="no image attributes"):
        paired_of(sc)


# ----------------------------------------------------------------------- one round by hand


def run_round(sc, server_round: int = 1):
    from fedsim.algorithms import build_strategy
    from fedsim.clients.app import app
    from fedsim.runtimes.inprocess import NODE_ID_OFFSET, InProcessGrid
    from fedsim.strategies.base import NodeInfo

    grid = InProcessGrid(app, sc.clients.num, {"scenario": sc.to_json()})
    strategy = build_strategy(sc)
    strategy.setup(sc, [NodeInfo(NODE_ID_OFFSET + k, k, 30, 0) for k in range(sc.clients.num)])
    arrays = strategy.initial_arrays()
    sent = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
    after_public = {k: v.clone() for k, v in strategy.net.state_dict().items()}
    replies = list(grid.send_and_receive(sent))
    assert not any(r.has_error() for r in replies), [r.error.reason for r in replies if r.has_error()]
    new_arrays, metrics = strategy.aggregate_train(server_round, replies)
    return strategy, grid, arrays, sent, replies, after_public, new_arrays, metrics


def weight_shapes(arrays: ArrayRecord, state: dict) -> set[tuple[int, ...]]:
    return {tuple(a.shape) for a in arrays.values()} | {tuple(v.shape) for v in state.values()}


def test_messages_carry_representations_only(write_scenario) -> None:
    from fedsim.clients.creamfl import MODEL_KEY
    from fedsim.loader import load_scenario
    from fedsim.records import array_view, record_nbytes

    sc = load_scenario(creamfl_scenario(write_scenario))
    strategy, grid, arrays, sent, replies, _, new_arrays, _ = run_round(sc)
    assert len(sent) == 3 and len(replies) == 3
    client_states = grid.client_states()
    forbidden = {tuple(a.shape) for a in arrays.values()}
    for state in client_states.values():
        forbidden |= {tuple(a.shape) for a in state[MODEL_KEY].values()}
    forbidden.discard((P, D))
    for msg in [*sent, *replies]:
        arrays_in = msg.content.array_records
        assert set(arrays_in) <= {"global", "local"}, set(arrays_in)
        for record in arrays_in.values():
            assert set(record) <= {"image", "text"}
            for value in record.values():
                assert tuple(value.shape) == (P, D) and tuple(value.shape) not in forbidden
                rows = np.linalg.norm(array_view(value), axis=1)
                np.testing.assert_allclose(rows, 1.0, atol=1e-5)  # L2-normalised representations
    # downlink: both global modalities; uplink: one per modality held (image, text, both)
    per = P * D * 4
    assert all(record_nbytes(m.content) >= 2 * per for m in sent)
    ups = sorted(record_nbytes(r.content) // per for r in replies)
    assert ups == [1, 1, 2]
    # no client reply contains any of the client's own weights
    for reply in replies:
        pid = strategy.partition_of(reply)
        weights = [array_view(a) for a in client_states[pid][MODEL_KEY].values()]
        for value in reply.content["local"].values():
            assert all(w.shape != array_view(value).shape for w in weights)
    assert set(new_arrays.keys()) == set(arrays.keys())  # the server's weights stay on the server


def test_round_without_text_clients_distils_images_only(write_scenario) -> None:
    from fedsim.loader import load_scenario

    sc = load_scenario(creamfl_scenario(write_scenario, modalities=("image",)))
    strategy, _, _, _, _, after_public, _, metrics = run_round(sc)
    assert metrics["image-clients"] == 3 and metrics["text-clients"] == 0
    assert "server-kd-loss" in metrics and "text-weight-max" not in metrics
    assert "image-target-r1" in metrics and "text-target-r1" not in metrics
    assert 0.0 <= metrics["image-target-r1"] <= 100.0 and -1.0 <= metrics["image-client-cos"] <= 1.0
    after_kd = strategy.net.state_dict()
    text_keys = [k for k in after_kd if k.startswith("text.")]
    image_keys = [k for k in after_kd if k.startswith("image.")]
    assert text_keys and image_keys
    assert all(torch.equal(after_kd[k], after_public[k]) for k in text_keys)  # no text target: untouched
    assert any(not torch.equal(after_kd[k], after_public[k]) for k in image_keys)


def test_round_without_any_representation_skips_distillation(write_scenario) -> None:
    from fedsim.loader import load_scenario

    sc = load_scenario(creamfl_scenario(write_scenario, public_only=True))
    strategy, _, _, sent, replies, after_public, _, metrics = run_round(sc)
    assert all("global" not in m.content.array_records for m in sent)
    assert all(not r.content.array_records for r in replies)
    assert metrics["image-clients"] == 0 and metrics["text-clients"] == 0 and "server-kd-loss" not in metrics
    after = strategy.net.state_dict()
    assert all(torch.equal(after[k], after_public[k]) for k in after)


def test_ensemble_and_mean_differ_only_in_weights(write_scenario) -> None:
    from fedsim.loader import load_scenario

    ens = run_round(load_scenario(creamfl_scenario(write_scenario)))[7]
    mean = run_round(load_scenario(creamfl_scenario(write_scenario, aggregation="mean")))[7]
    assert mean["image-weight-max"] == pytest.approx(0.5)  # two image-holding clients, uniform
    assert ens["image-weight-max"] > 0.5
    assert ens["server-public-loss"] == pytest.approx(mean["server-public-loss"])  # same step 1


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_tiny_run_through_cli(write_scenario, tmp_path: Path) -> None:
    from tests.helpers import cli, only_run

    path = creamfl_scenario(write_scenario)
    res = cli("run", str(path), "--quiet", "--set", f"output.dir={tmp_path / 'out'}")
    assert res.returncode == 0, res.stderr
    run = only_run(tmp_path / "out")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert 0.0 <= r["server_rsum"] <= 600.0
        assert r["server_rsum"] == pytest.approx(
            sum(r[f"server_{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
        )
    per = P * D * 4
    for r in rows[1:]:
        assert r["bytes_down"] >= 3 * 2 * per and r["bytes_up"] >= 4 * per
        assert r["clients_sampled"] == 3 and r["train_image_clients"] == 2 and r["train_text_clients"] == 2
    clients = [json.loads(x) for x in (run / "clients.jsonl").read_text().splitlines()]
    train = sorted(
        (c["round"], c["partition_id"], c["model_rounds"]) for c in clients if c["phase"] == "train"
    )
    assert train == [(r, p, r) for r in (1, 2) for p in range(3)]  # models kept across rounds
    assert not any(c["phase"] == "evaluate" for c in clients)


def test_shipped_comparison_holds_creamfl_its_baseline_and_ablations() -> None:
    from fedsim.loader import read_file
    from fedsim.methods.creamfl import params_of

    root = Path(__file__).parents[1]
    contents = read_file(root / "scenarios" / "creamfl_shapes.yaml")
    seen = {}
    for cell in contents.cells():
        p = params_of(contents.document(cell))
        assert (p.tau, p.reg_weight, p.kd_weight, p.public_size) == (0.5, 0.5, 0.3, 1000)
        seen[cell.label.split(",")[0]] = (p.public_only, p.aggregation, p.inter, p.intra)
    assert seen == {
        "algorithm=creamfl": (False, "ensemble", True, True),
        "algorithm=public_only": (True, "ensemble", True, True),
        "algorithm=mean": (False, "mean", True, True),
        "algorithm=no_inter": (False, "ensemble", False, True),
        "algorithm=no_intra": (False, "ensemble", True, False),
    }


def test_wide_clients_scenario_is_run_d_of_the_readme() -> None:
    from fedsim.loader import load_scenario
    from fedsim.methods.creamfl import model_params, params_of

    root = Path(__file__).parents[1]
    sc = load_scenario(root / "scenarios" / "creamfl_shapes_wide_clients.yaml", ["sweep=null"])
    p, m = params_of(sc), model_params(sc)
    assert (p.tau, p.reg_weight, p.kd_weight, p.public_size) == (0.5, 0.5, 0.3, 1000)
    assert p.modalities == ("image_text",) and p.distil_optimizer == "own" and p.aggregation == "ensemble"
    assert tuple(m.image_channels) == tuple(m.server_image_channels) and m.text_width == m.server_text_width
    assert (sc.rounds, sc.train.local_epochs, sc.data.options["num_train"]) == (20, 2, 12000)


@pytest.mark.slow
@pytest.mark.parametrize("distil_optimizer", ["shared", "own"])
def test_resume_restores_client_models_and_server_optimizer(write_scenario, distil_optimizer: str) -> None:
    from rich.console import Console

    from fedsim.runner import resume_run, start_run
    from tests.helpers import final_arrays, rows

    quiet = Console(quiet=True)
    path = creamfl_scenario(write_scenario, distil_optimizer=distil_optimizer)
    raw = yaml.safe_load(path.read_text())
    raw.update(rounds=3, output={**raw["output"], "checkpoint_every": 1})
    path.write_text(yaml.safe_dump(raw))
    full, _ = start_run(path, [], None, False, False, quiet)
    part, _ = start_run(path, [], 2, False, False, quiet)
    _, summary = resume_run(part.path, None, None, False, False, quiet)
    assert summary["status"] == "completed"
    assert rows(part.path / "metrics.jsonl") == rows(full.path / "metrics.jsonl")
    assert rows(part.path / "clients.jsonl") == rows(full.path / "clients.jsonl")
    for key, value in final_arrays(full.path).items():
        np.testing.assert_array_equal(value, final_arrays(part.path)[key])


def test_distillation_optimizer_is_the_public_one_or_its_own(write_scenario) -> None:
    from fedsim.loader import load_scenario

    shared, *_ = run_round(load_scenario(creamfl_scenario(write_scenario)))
    assert shared.distil_optimizer is shared.optimizer
    assert set(shared.state_dict()) == {"server_optimizer"}
    steps = {int(s["step"]) for s in shared.state_dict()["server_optimizer"]["state"].values()}
    assert steps == {2}  # one public batch (48 pairs, batch 64) and one distillation batch
    own, *_ = run_round(load_scenario(creamfl_scenario(write_scenario, distil_optimizer="own")))
    assert own.distil_optimizer is not own.optimizer
    state = own.state_dict()
    assert set(state) == {"server_optimizer", "distil_optimizer"}
    kd_steps = {int(s["step"]) for s in state["distil_optimizer"]["state"].values()}
    public_steps = {int(s["step"]) for s in state["server_optimizer"]["state"].values()}
    assert kd_steps == {1} and public_steps == {1}  # each optimizer counts its own batch only


def test_clients_reach_the_server_only_through_distillation(write_scenario) -> None:
    from fedsim.loader import load_scenario
    from fedsim.records import arrays_to_numpy

    kd0 = run_round(load_scenario(creamfl_scenario(write_scenario, kd_weight=0.0)))[6]
    alone = run_round(load_scenario(creamfl_scenario(write_scenario, public_only=True)))[6]
    kd = run_round(load_scenario(creamfl_scenario(write_scenario)))[6]
    a, b, c = arrays_to_numpy(kd0), arrays_to_numpy(alone), arrays_to_numpy(kd)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_server_warmup_rounds_run_as_the_public_only_baseline(write_scenario) -> None:
    from fedsim.loader import load_scenario
    from fedsim.records import arrays_to_numpy

    warm = load_scenario(creamfl_scenario(write_scenario, server_warmup_rounds=1))
    *_, sent, replies, _, arrays, metrics = run_round(warm, server_round=1)
    assert all("global" not in m.content.array_records for m in sent)
    assert all(not r.content.array_records for r in replies)
    assert metrics["image-clients"] == 0 and "server-kd-loss" not in metrics
    alone = run_round(load_scenario(creamfl_scenario(write_scenario, public_only=True)))[6]
    a, b = arrays_to_numpy(arrays), arrays_to_numpy(alone)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # from the next round on the clients take part and the server distils
    *_, sent, replies, _, _, metrics = run_round(warm, server_round=2)
    assert all("global" in m.content.array_records for m in sent)
    assert metrics["image-clients"] == 2 and metrics["text-clients"] == 2 and "server-kd-loss" in metrics


def test_client_warmup_epochs_come_first_and_once(write_scenario) -> None:
    from fedsim.clients.creamfl import MODEL_KEY, private_epochs
    from fedsim.loader import load_scenario
    from fedsim.methods.creamfl import params_of
    from fedsim.records import arrays_to_numpy

    # (write_scenario writes one file: load each scenario before writing the next)
    once = {"local_schedule": "private_then_public"}  # warm-up epochs are private epochs in front
    warm_sc = load_scenario(
        creamfl_scenario(write_scenario, client_warmup_epochs=2, **once), ["train.local_epochs=1"]
    )
    p = params_of(warm_sc)
    assert [private_epochs(1, p, age) for age in (0, 1, 5)] == [3, 1, 1]
    plain_sc = load_scenario(creamfl_scenario(write_scenario, **once), ["train.local_epochs=3"])
    assert private_epochs(1, params_of(plain_sc), 0) == 1
    one_sc = load_scenario(creamfl_scenario(write_scenario, **once), ["train.local_epochs=1"])
    # a first round with 1 local + 2 warm-up epochs is a first round of 3 local epochs
    warm, plain, one = (run_round(sc)[1].client_states() for sc in (warm_sc, plain_sc, one_sc))
    for pid, state in warm.items():
        w, q = arrays_to_numpy(state[MODEL_KEY]), arrays_to_numpy(plain[pid][MODEL_KEY])
        assert all(np.array_equal(w[k], q[k]) for k in w)
        o = arrays_to_numpy(one[pid][MODEL_KEY])
        assert not all(np.array_equal(w[k], o[k]) for k in w)


# ----------------------------------------------------------------------------- the authors' code's choices


def test_local_schedule_interleaves_public_passes_by_default() -> None:
    from fedsim.clients.creamfl import local_schedule
    from fedsim.methods.creamfl import CreamFLParams

    authors = CreamFLParams()
    assert authors.local_schedule == "interleaved"
    assert local_schedule(2, authors, age=1) == ["private", "public", "private", "public"]
    warm = CreamFLParams(client_warmup_epochs=1)
    assert local_schedule(2, warm, age=0) == ["private", "private", "public", "private", "public"]
    before = CreamFLParams(local_schedule="private_then_public")
    assert local_schedule(2, before, age=1) == ["private", "private", "public"]
    assert local_schedule(2, CreamFLParams(inter=False, intra=False), age=1) == ["private", "private"]


def test_client_optimizer_is_kept_across_rounds(write_scenario) -> None:
    """Round 2 of a client starts from the Adam state of its round 1 (or from nothing: ``fresh``)."""
    from fedsim.clients.creamfl import OPTIMIZER_KEY
    from fedsim.loader import load_scenario

    kept = load_scenario(creamfl_scenario(write_scenario))
    _, grid, *_ = run_round(kept)
    states = grid.client_states()
    steps = []
    for state in states.values():
        raw = state.config_records[OPTIMIZER_KEY]["state"]
        opt = torch.load(io.BytesIO(raw), weights_only=True)
        steps.append({int(s["step"]) for s in opt["state"].values()})
    # 90 training images over 3 clients, batch 16: 2 private batches; 48 public items: 3 batches
    # (a classifier head takes the 2 private steps only: it has no gradient in the public pass)
    assert sorted(map(sorted, steps)) == [[2, 5], [2, 5], [5]], steps
    fresh = load_scenario(creamfl_scenario(write_scenario, client_optimizer="fresh"))
    _, grid, *_ = run_round(fresh)
    assert all(OPTIMIZER_KEY not in s.config_records for s in grid.client_states().values())


def test_server_schedule_reduction_clip_and_kd_weight_per_client_type(write_scenario) -> None:
    from fedsim.loader import load_scenario
    from fedsim.methods.creamfl import cosine_lr

    assert cosine_lr(2e-4, 1, 10) == pytest.approx(2e-4)
    assert cosine_lr(2e-4, 6, 10) == pytest.approx(1e-4)
    assert cosine_lr(2e-4, 10, 10) == pytest.approx(2e-4 * 0.5 * (1 + np.cos(np.pi * 0.9)))
    sc = load_scenario(creamfl_scenario(write_scenario), ["rounds=4"])
    strategy, *_, metrics = run_round(sc, server_round=3)
    assert metrics["server-lr"] == pytest.approx(cosine_lr(2e-4, 3, 4))
    assert strategy.optimizer.param_groups[0]["lr"] == pytest.approx(cosine_lr(2e-4, 3, 4))
    assert metrics["server-kd-weight"] == pytest.approx(0.9)  # image, text and image-text clients
    one_type = load_scenario(creamfl_scenario(write_scenario, modalities=("image",)))
    assert run_round(one_type)[-1]["server-kd-weight"] == pytest.approx(0.3)
    flat = load_scenario(
        creamfl_scenario(write_scenario, kd_per_client_type=False, server_schedule="constant")
    )
    metrics = run_round(flat, server_round=2)[-1]
    assert metrics["server-kd-weight"] == pytest.approx(0.3) and metrics["server-lr"] == pytest.approx(2e-4)
