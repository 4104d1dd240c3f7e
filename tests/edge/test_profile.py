"""Neurosurgeon's split-point profile: rows, byte counts, latencies (no absolute times)."""

from __future__ import annotations

import math

import pytest
import torch

from fedsim.edge.profile import profile_split_points
from fedsim.edge.resnet import resnet18, small_resnet

BOUNDARIES = ["stem", "layer1", "layer2", "layer3", "layer4", "pool_fc"]


def _check(rows, input_shape, shapes):
    assert [r["boundary"] for r in rows] == BOUNDARIES
    assert [r["output_shape"] for r in rows] == shapes
    cumulative = 0.0
    for r in rows:
        numel = math.prod(r["output_shape"])
        assert r["output_bytes_fp32"] == 4 * numel
        assert r["output_bytes_quant8"] == numel + 5
        assert r["input_bytes_uint8"] == math.prod(input_shape)
        assert r["stage_latency_ms"] > 0
        assert r["cumulative_latency_ms"] >= cumulative
        cumulative += r["stage_latency_ms"]
        assert r["cumulative_latency_ms"] == pytest.approx(cumulative)


def test_resnet18_at_224():
    model = resnet18()
    rows = profile_split_points(model, (3, 224, 224), repeats=1, warmup=0)
    shapes = [[64, 56, 56], [64, 56, 56], [128, 28, 28], [256, 14, 14], [512, 7, 7], [1000]]
    _check(rows, (3, 224, 224), shapes)
    assert rows[0]["output_bytes_fp32"] == 802_816  # Neurosurgeon's point: 5x the 150,528-byte input
    assert model.training  # mode restored


def test_small_resnet_at_64():
    model = small_resnet(10, width=16, stem_pool=True).eval()
    threads = torch.get_num_threads()
    rows = profile_split_points(model, (3, 64, 64), repeats=3, warmup=1, num_threads=1)
    assert torch.get_num_threads() == threads
    shapes = [[16, 32, 32], [16, 32, 32], [32, 16, 16], [64, 8, 8], [128, 4, 4], [10]]
    _check(rows, (3, 64, 64), shapes)
    assert not model.training


def test_bad_arguments():
    with pytest.raises(ValueError, match="repeats"):
        profile_split_points(small_resnet(2), (3, 32, 32), repeats=0)
