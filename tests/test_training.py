"""The shared training loop, optimise_epoch."""

from __future__ import annotations

import pytest
import torch

from fedsim.training import optimise_epoch


def test_optimise_epoch_steps_each_batch_once_and_skips_none() -> None:
    w = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.SGD([w], lr=0.1)
    seen: list[list[int]] = []

    def batch_loss(idx: torch.Tensor) -> torch.Tensor | None:
        seen.append(sorted(idx.tolist()))
        if len(idx) < 4:
            return None  # the last, short batch is skipped
        return w * 1.0  # d/dw = 1: each step moves w by -lr

    mean = optimise_epoch(10, 4, opt, torch.Generator().manual_seed(0), batch_loss)
    assert sorted(i for b in seen for i in b) == list(range(10))  # every item once
    assert [len(b) for b in seen] == [4, 4, 2]
    assert float(w) == pytest.approx(-0.2)  # two steps, not three
    assert mean == pytest.approx((0.0 * 4 + -0.1 * 4) / 10)  # loss before each step, over all 10 items
