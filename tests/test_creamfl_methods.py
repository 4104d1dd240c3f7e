"""CreamFL's maths on hand-made tensors: losses, ensemble weights, chunking, retrieval."""

from __future__ import annotations

import math

import pytest
import torch

from fedsim.methods.creamfl import (
    aggregate,
    distillation_diagnostics,
    ensemble_scores,
    ensemble_weights,
    info_nce,
    inter_modal_loss,
    intra_modal_loss,
    mean_weights,
    mse,
    recall_at_k,
)

E = math.e


def test_ensemble_weights_favour_the_client_aligned_with_the_global_text() -> None:
    t_global = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    aligned = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # i_j . t_j = 1, i_j . t_k = 0
    swapped = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # i_j . t_j = 0, i_j . t_k = 1
    local = torch.stack([aligned, swapped])
    s = ensemble_scores(local, t_global)
    # s = log(e^1 / (e^1 + e^0)) and log(e^0 / (e^0 + e^1))
    torch.testing.assert_close(s[0], torch.full((2,), math.log(E / (E + 1))))
    torch.testing.assert_close(s[1], torch.full((2,), math.log(1 / (1 + E))))
    w = ensemble_weights(local, t_global)
    # softmax over clients of those: e / (e + 1) for the aligned client
    torch.testing.assert_close(w[0], torch.full((2,), E / (E + 1)))
    torch.testing.assert_close(w.sum(0), torch.ones(2))
    bar = aggregate(local, w)
    torch.testing.assert_close(bar[0], torch.tensor([E / (E + 1), 1 / (E + 1)]))


def test_mean_weights_are_uniform_and_aggregate_is_the_mean() -> None:
    local = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    w = mean_weights(local)
    torch.testing.assert_close(w, torch.full((3, 5), 1 / 3))
    torch.testing.assert_close(aggregate(local, w), local.mean(0))


@pytest.mark.parametrize("chunk", [1, 3, 7, 17, 1000])
def test_chunked_ensemble_equals_unchunked(chunk: int) -> None:
    g = torch.Generator().manual_seed(1)
    local = torch.nn.functional.normalize(torch.randn(4, 17, 8, generator=g), dim=-1)
    global_other = torch.nn.functional.normalize(torch.randn(17, 8, generator=g), dim=-1)
    full = torch.log_softmax(local @ global_other.T, dim=-1).diagonal(dim1=1, dim2=2)  # [C, P]
    torch.testing.assert_close(ensemble_scores(local, global_other, chunk), full)
    torch.testing.assert_close(ensemble_weights(local, global_other, chunk), torch.softmax(full, 0))


def test_info_nce_against_hand_computation() -> None:
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    tau = 0.5
    # logits = img @ txt^T / tau = [[2, 1.2], [0, 1.6]]
    i2t = -(math.log(E**2 / (E**2 + E**1.2)) + math.log(E**1.6 / (1 + E**1.6))) / 2
    t2i = -(math.log(E**2 / (E**2 + 1)) + math.log(E**1.6 / (E**1.2 + E**1.6))) / 2
    assert float(info_nce(img, txt, tau)) == pytest.approx((i2t + t2i) / 2, rel=1e-6)


def test_inter_modal_loss_against_hand_computation() -> None:
    local = torch.tensor([[1.0, 0.0]])
    t_global = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    # item 1 of the public set: positive t_1 (dot 1), negatives dots 0 and -1, tau 0.5
    expected = -math.log(E**2 / (E**0 + E**2 + E**-2))
    assert float(inter_modal_loss(local, t_global, torch.tensor([1]), 0.5)) == pytest.approx(
        expected, rel=1e-6
    )


def test_intra_modal_loss_against_hand_computation() -> None:
    local = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    glob = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    prev = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # row 0: pos 0.6, neg 1.0; row 1: pos 1.0, neg 0.0; tau 0.5
    r0 = -math.log(E**1.2 / (E**1.2 + E**2))
    r1 = -math.log(E**2 / (E**2 + 1))
    assert float(intra_modal_loss(local, glob, prev, 0.5)) == pytest.approx((r0 + r1) / 2, rel=1e-6)


def test_mse_against_hand_computation() -> None:
    pred = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[0.0, 0.0], [0.0, -1.0]])
    assert float(mse(pred, target)) == pytest.approx((1.0 + 0.0 + 0.0 + 4.0) / 4)


def test_recall_on_hand_made_similarity() -> None:
    # image 0 finds caption 0 first; image 1 ranks caption 1 third; image 2 second.
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.2],
            [0.8, 0.3, 0.7],
            [0.1, 0.6, 0.5],
        ]
    )
    r = recall_at_k(sim, ks=(1, 2, 3))
    assert r["i2t_r1"] == pytest.approx(100 / 3)
    assert r["i2t_r2"] == pytest.approx(200 / 3)
    assert r["i2t_r3"] == pytest.approx(100.0)
    # columns: caption 0 finds image 0 first (0.9); caption 1 has image 2 (0.6) above its
    # match (0.3); caption 2 has image 1 (0.7) above its match (0.5)
    assert r["t2i_r1"] == pytest.approx(100 / 3)
    assert r["t2i_r2"] == pytest.approx(100.0)
    assert r["t2i_r3"] == pytest.approx(100.0)
    assert r["rsum"] == pytest.approx(sum(v for k, v in r.items() if k != "rsum"))


def test_recall_is_perfect_on_identity_and_counts_ties_for_the_match() -> None:
    r = recall_at_k(torch.eye(20))
    assert r["rsum"] == pytest.approx(600.0)
    r = recall_at_k(torch.ones(4, 4))
    assert r["i2t_r1"] == pytest.approx(100.0)


def test_distillation_diagnostics_compare_targets_with_the_server_own_retrieval() -> None:
    eye = torch.eye(3)
    global_reps = {"image": eye, "text": eye}  # the server retrieves every public item
    swapped = eye[[1, 0, 2]]  # items 0 and 1 exchanged: only item 2 retrieves its match
    local = {"image": torch.stack([eye, swapped]), "text": torch.stack([swapped, swapped])}
    targets = {"image": swapped, "text": 2.0 * eye}  # targets need not have unit norm
    out = distillation_diagnostics(global_reps, local, targets)
    assert out["server-public-r1-i2t"] == out["server-public-r1-t2i"] == 100.0
    assert out["image-target-r1"] == pytest.approx(100.0 / 3)
    assert out["text-target-r1"] == 100.0
    assert out["image-client-cos"] == pytest.approx((1.0 + 1.0 / 3) / 2)  # eye: 1, swapped: 1/3
    assert out["text-client-cos"] == pytest.approx(1.0 / 3)


def test_distillation_diagnostics_only_for_modalities_with_targets() -> None:
    eye = torch.eye(2)
    out = distillation_diagnostics({"image": eye, "text": eye}, {"image": eye[None]}, {"image": eye})
    assert set(out) == {"server-public-r1-i2t", "server-public-r1-t2i", "image-target-r1", "image-client-cos"}


def test_info_nce_sum_is_the_batch_size_times_the_mean() -> None:
    g = torch.Generator().manual_seed(3)
    img = torch.nn.functional.normalize(torch.randn(7, 5, generator=g), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(7, 5, generator=g), dim=1)
    assert float(info_nce(img, txt, 0.1, "sum")) == pytest.approx(
        7 * float(info_nce(img, txt, 0.1)), rel=1e-6
    )


def test_shifted_images_are_translations_with_replicated_edges() -> None:
    from fedsim.methods.creamfl import shifted

    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    g = torch.Generator().manual_seed(0)
    assert shifted(x, 0, g) is x
    out = shifted(x, 2, g)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    for i in range(2):
        windows = [padded[i, :, y : y + 6, c : c + 6] for y in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_pair_clients_average_the_intra_term_over_their_modalities() -> None:
    from fedsim.clients.creamfl import public_regularised_pass
    from fedsim.methods.creamfl import CreamFLParams
    from fedsim.models.multimodal import MultimodalParams, build_multimodal

    def loss(pair_intra: str) -> float:
        torch.manual_seed(0)
        net = build_multimodal(MultimodalParams(embed_dim=8), (3, 8, 8), 20, image=True, text=True)
        g = torch.Generator().manual_seed(1)
        public = {
            "image": torch.randn(6, 3, 8, 8, generator=g),
            "text": torch.randint(1, 20, (6, 4), generator=g),
        }
        reps = {m: torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=1) for m in public}
        prev = {m: torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=1) for m in public}
        p = CreamFLParams(inter=False, pair_intra=pair_intra)
        opt = torch.optim.SGD(net.parameters(), lr=0.0)
        return public_regularised_pass(
            net,
            public,
            reps,
            prev,
            p,
            batch_size=6,
            optimizer=opt,
            generator=torch.Generator().manual_seed(2),
        )

    assert loss("mean") == pytest.approx(loss("sum") / 2, rel=1e-6)
