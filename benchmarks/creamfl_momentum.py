"""Does the shared Adam's momentum still hurt CreamFL's server with ~400 public steps a round?

docs/results/creamfl.md found that, with 1,000 public pairs (16 server steps a round), a
distillation towards the server's *own* representations (a zero loss) halves its public
Recall@1 when it shares the public epoch's Adam: its steps replay the contrastive
epoch's momentum. The authors' public set has 50,000 pairs (about 391 steps a round), which
would dilute that replay to a few percent of an epoch. This script measures it, server only
(no clients, the same server network and data as scenarios/creamfl_shapes.yaml):

1. the server trains ``--rounds`` public epochs (InfoNCE) with one Adam;
2. from a copy of that server and its Adam, one distillation epoch towards its own public
   representations (kd_weight 0.3, the zero-loss control), with the same Adam, and again
   with Adam's first moment zeroed first;
3. public Recall@1 (both ways) and test rsum after each.

For each public-set size, both with fedsim's earlier server choices (mean InfoNCE, lr 1e-3,
no clipping) and with the authors' (summed InfoNCE, lr 2e-4 with cosine decay, gradient
clip 2). The ratio printed is the rsum after the zero-loss distillation over the rsum
before it (1.0: no harm). Run:

    python benchmarks/creamfl_momentum.py [--sizes 1000 25600] [--rounds 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from fedsim.loader import load_scenario
from fedsim.methods.creamfl import cosine_lr, encode_set, paired_of, public_inputs, recall_at_k
from fedsim.strategies.creamfl import distil, server_net, train_contrastive

ROOT = Path(__file__).parents[1]
CHOICES = {
    "earlier": {"server_loss_reduction": "mean", "server_lr": 1e-3, "server_schedule": "constant",
                "server_grad_clip": None},
    "authors": {"server_loss_reduction": "sum", "server_lr": 2e-4, "server_schedule": "cosine",
                "server_grad_clip": 2.0},
}  # fmt: skip


def scores(net: torch.nn.Module, data) -> tuple[float, float, float]:
    """(public R@1 i2t, public R@1 t2i, test rsum) of the server network."""
    pub = recall_at_k(
        encode_set(net, "image", data.public.images) @ encode_set(net, "text", data.public.tokens).T
    )
    test = recall_at_k(
        encode_set(net, "image", data.test.images) @ encode_set(net, "text", data.test.tokens).T
    )
    return pub["i2t_r1"], pub["t2i_r1"], test["rsum"]


def run(size: int, choice: str, rounds: int) -> dict[str, object]:
    """One public-set size and set of server choices: the three rows of the check."""
    c = CHOICES[choice]
    overrides = ["sweep=null", f"algorithm.public_size={size}", f"rounds={rounds}"]
    overrides += [f"algorithm.{k}={'null' if v is None else v}" for k, v in c.items()]
    sc = load_scenario(ROOT / "scenarios" / "creamfl_shapes.yaml", overrides)
    data = paired_of(sc)
    net = server_net(sc)
    opt = torch.optim.Adam(net.parameters(), lr=float(c["server_lr"]))  # type: ignore[arg-type]
    start = time.perf_counter()
    for r in range(1, rounds + 1):
        lr = float(c["server_lr"])  # type: ignore[arg-type]
        if c["server_schedule"] == "cosine":
            lr = cosine_lr(lr, r, rounds)
        for group in opt.param_groups:
            group["lr"] = lr
        train_contrastive(
            net,
            data.public.images,
            data.public.tokens,
            tau=0.1,
            batch_size=64,
            optimizer=opt,
            generator=torch.Generator().manual_seed(r),
            reduction=c["server_loss_reduction"],  # type: ignore[arg-type]
            clip=c["server_grad_clip"],  # type: ignore[arg-type]
        )
    seconds = time.perf_counter() - start
    before = scores(net, data)
    own = {m: encode_set(net, m, public_inputs(data.public, m)) for m in ("image", "text")}
    rows = {"before": before}
    for label, zero_momentum in (("zero-loss, same Adam", False), ("zero-loss, first moment zeroed", True)):
        n2 = copy.deepcopy(net)
        o2 = torch.optim.Adam(n2.parameters(), lr=opt.param_groups[0]["lr"])
        o2.load_state_dict(copy.deepcopy(opt.state_dict()))
        if zero_momentum:
            for state in o2.state.values():
                state["exp_avg"].zero_()
        distil(
            n2,
            data.public,
            own,
            kd_weight=0.3,
            batch_size=64,
            optimizer=o2,
            generator=torch.Generator().manual_seed(99),
            clip=c["server_grad_clip"],  # type: ignore[arg-type]
        )
        rows[label] = scores(n2, data)
    return {"size": size, "choice": choice, "steps": -(-size // 64), "seconds": seconds, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 25600])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| public pairs | steps/round | server choices | before: R@1 i2t / t2i, rsum | "
          "zero-loss, same Adam | zero-loss, first moment zeroed | rsum ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for choice in CHOICES:
            out = run(size, choice, args.rounds)
            rows = out["rows"]
            cells = [f"{a:.1f} / {b:.1f}, {s:.1f}" for a, b, s in rows.values()]  # type: ignore[union-attr]
            ratio = rows["zero-loss, same Adam"][2] / max(rows["before"][2], 1e-9)  # type: ignore[index]
            print(f"| {size} | {out['steps']} | {choice} | {' | '.join(cells)} | {ratio:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
