"""Cohort training (torch.func) against the plain loop over clients, in one process run.

The same clients' local training two ways, timed in the same run, one torch thread:
``loop`` trains them one after another (:func:`fedsim.training.train_epochs`, what every
runtime does by default); ``cohort`` trains them together (:func:`fedsim.cohort.train_cohort`).
Prints, per workload, the best of ``--repeat`` seconds of each, their ratio, and the largest
difference between the two ways' trained weights. Then the same for local evaluation (one
forward pass per client against one batched pass over all clients' test sets), and the
memory budget: for several ``train.cohort_memory_mb`` values, the chunk it gives, the time
and the peak resident memory of a fresh process training 200 clients. Run:

    python benchmarks/cohort_training.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import psutil
import torch

from fedsim.clients.cohort import outputs_together
from fedsim.cohort import ClientJob, chunk_size, train_cohort
from fedsim.config import OptimizerSpec
from fedsim.data import build_federated
from fedsim.models import build_model
from fedsim.training import make_optimizer, train_epochs

#: name -> (image side, clients, samples per client (a range: sizes drawn in it), batch, BatchNorm)
WORKLOADS = {
    "16px-b10": (16, 50, (50, 50), 10, False),
    "28px-b10": (28, 50, (50, 50), 10, False),
    "16px-b32": (16, 50, (160, 160), 32, False),
    "16px-b10-sizes": (16, 50, (20, 80), 10, False),
    "16px-b10-bn": (16, 50, (50, 50), 10, True),
}
SPEC = OptimizerSpec(name="sgd", lr=0.05, momentum=0.9)
#: train.cohort_memory_mb values of the memory part; 200 clients x 50 samples, 16 px, batch 10
BUDGETS_MB = (8, 32, 128, 1024, 4096)


def client_sets(side: int, clients: int, sizes: tuple[int, int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``clients`` iid shares of the shapes data set, each cut to a size drawn in ``sizes``."""
    low, high = sizes
    fed = build_federated(
        "shapes", {"image_size": side, "num_train": clients * high, "num_test": 10}, "iid", {}, clients, 0
    )
    g = torch.Generator().manual_seed(1)
    counts = torch.randint(low, high + 1, (clients,), generator=g).tolist()
    return [tuple(t[:n] for t in fed.client_train(k)) for k, n in enumerate(counts)]  # type: ignore[misc]


def loop(model: torch.nn.Module, start: dict, data: list, batch: int) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    out = []
    for k, (x, y) in enumerate(data):
        model.load_state_dict(start)
        opt = make_optimizer(model.parameters(), SPEC)
        gen = torch.Generator().manual_seed(k)
        train_epochs(model, x, y, epochs=1, batch_size=batch, optimizer=opt, generator=gen)
        out.append({n: v.clone() for n, v in model.state_dict().items()})
    model.load_state_dict(start)
    return time.perf_counter() - t0, out


def cohort(
    model: torch.nn.Module, start: dict, data: list, batch: int, chunk: int | None = None
) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    jobs = [ClientJob(x, y, torch.Generator().manual_seed(k)) for k, (x, y) in enumerate(data)]
    out = train_cohort(model, start, jobs, epochs=1, batch_size=batch, optimizer=SPEC, chunk=chunk)
    return time.perf_counter() - t0, [w for w, _ in out]


@torch.no_grad()
def evaluate_both(model: torch.nn.Module, xs: list[torch.Tensor], repeat: int) -> tuple[float, float, float]:
    """Seconds of one forward pass per client and of one batched pass; the largest logit gap."""
    model.eval()
    t_loop = t_batch = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        one = [model(x) for x in xs]
        t1 = time.perf_counter()
        together = outputs_together(model, xs)
        t_loop, t_batch = min(t_loop, t1 - t0), min(t_batch, time.perf_counter() - t1)
    gap = max(float((a - b).abs().max()) for a, b in zip(one, together, strict=True))
    return t_loop, t_batch, gap


def peak(budget_mb: float) -> dict:
    """In this (fresh) process: 200 clients trained as cohorts within ``budget_mb``; the peak
    resident memory above what the process held before training (sampled every 5 ms)."""
    data = client_sets(16, 200, (50, 50))
    model = build_model("cnn", {}, (3, 16, 16), 10, 0)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    chunk = chunk_size(model, data[0][0][0], 10, SPEC, budget_mb)
    me = psutil.Process()
    base = top = me.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal top
        while not done.wait(0.005):
            top = max(top, me.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        seconds, _ = cohort(model, start, data, 10, chunk)
    finally:
        done.set()
        sampler.join()
    return {"chunk": chunk, "seconds": seconds, "growth_mb": (top - base) / 2**20}


def main() -> None:
    """Time both ways on every workload and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--peak", type=float, help=argparse.SUPPRESS)  # the memory part's child
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.peak is not None:
        print(json.dumps(peak(args.peak)))
        return
    print("one torch thread; best of", args.repeat, "; SGD lr 0.05 momentum 0.9, 1 epoch")
    for name, (side, clients, sizes, batch, bn) in WORKLOADS.items():
        data = client_sets(side, clients, sizes)
        model = build_model("cnn", {"batch_norm": bn}, (3, side, side), 10, 0)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        loop(model, start, data[:2], batch), cohort(model, start, data[:2], batch)  # warm-up
        t_loop, w_loop = min(
            (loop(model, start, data, batch) for _ in range(args.repeat)), key=lambda r: r[0]
        )
        t_cohort, w_cohort = min(
            (cohort(model, start, data, batch) for _ in range(args.repeat)), key=lambda r: r[0]
        )
        gap = max(
            float((a[k].double() - b[k].double()).abs().max())
            for a, b in zip(w_loop, w_cohort, strict=True)
            for k in a
        )
        shown = f"{sizes[0]}" if sizes[0] == sizes[1] else f"{sizes[0]}-{sizes[1]}"
        print(
            f"{name:>14} ({clients} clients x {shown}, batch {batch}): loop {t_loop:.3f} s, "
            f"cohort {t_cohort:.3f} s, {t_loop / t_cohort:.2f}x; largest weight difference {gap:.1e}"
        )
    model = build_model("cnn", {}, (3, 16, 16), 10, 0)
    fed = build_federated(
        "shapes", {"image_size": 16, "num_train": 4000, "num_test": 4000}, "iid", {}, 100, 0
    )
    xs = [fed.client_test(k)[0] for k in range(100)]
    t_loop, t_batch, gap = evaluate_both(model, xs, args.repeat)
    print(
        f"{'evaluate':>14} (100 clients x {len(xs[0])} test samples): one pass each {t_loop:.3f} s, "
        f"batched {t_batch:.3f} s, {t_loop / t_batch:.2f}x; largest logit difference {gap:.1e}"
    )
    print("memory budget: 200 clients x 50, 16 px, batch 10, each budget in a fresh process")
    for budget in BUDGETS_MB:
        out = subprocess.run(
            [sys.executable, __file__, "--peak", str(budget)], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.splitlines()[-1])
        print(
            f"  cohort_memory_mb {budget:>5}: chunk {r['chunk']:>3} clients, {r['seconds']:.2f} s, "
            f"peak resident memory +{r['growth_mb']:.0f} MB while training"
        )


if __name__ == "__main__":
    main()
