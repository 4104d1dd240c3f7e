"""Cohort training (torch.func) against the plain loop over clients, in one process run.

The same clients' local training two ways, timed in the same run, one torch thread:
``loop`` trains them one after another (:func:`fedsim.training.train_epochs`, what every
runtime does today); ``cohort`` trains them together (:func:`fedsim.cohort.train_cohort`).
Prints, per workload, the best of ``--repeat`` seconds of each, their ratio, and the largest
difference between the two ways' trained weights. Run:

    python benchmarks/cohort_training.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from fedsim.cohort import ClientJob, train_cohort
from fedsim.config import OptimizerSpec
from fedsim.data import build_federated
from fedsim.models import build_model
from fedsim.training import make_optimizer, train_epochs

#: name -> (image side, clients, samples per client, batch size)
WORKLOADS = {
    "16px-b10": (16, 50, 50, 10),
    "28px-b10": (28, 50, 50, 10),
    "16px-b32": (16, 50, 160, 32),
}
SPEC = OptimizerSpec(name="sgd", lr=0.05, momentum=0.9)


def client_sets(side: int, clients: int, samples: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``clients`` iid shares of the shapes data set, ``samples`` each."""
    fed = build_federated(
        "shapes",
        {"image_size": side, "num_train": clients * samples, "num_test": 10},
        "iid",
        {},
        clients,
        0,
    )
    return [fed.client_train(k) for k in range(clients)]


def loop(model: torch.nn.Module, start: dict, data: list, batch: int) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    out = []
    for k, (x, y) in enumerate(data):
        model.load_state_dict(start)
        opt = make_optimizer(model.parameters(), SPEC)
        gen = torch.Generator().manual_seed(k)
        train_epochs(model, x, y, epochs=1, batch_size=batch, optimizer=opt, generator=gen)
        out.append({n: v.clone() for n, v in model.state_dict().items()})
    return time.perf_counter() - t0, out


def cohort(model: torch.nn.Module, start: dict, data: list, batch: int) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    jobs = [ClientJob(x, y, torch.Generator().manual_seed(k)) for k, (x, y) in enumerate(data)]
    out = train_cohort(model, start, jobs, epochs=1, batch_size=batch, optimizer=SPEC)
    return time.perf_counter() - t0, [w for w, _ in out]


def best(way, model: torch.nn.Module, start: dict, data: list, batch: int, repeat: int) -> tuple[float, list]:
    """The fastest of ``repeat`` runs of ``way``."""
    return min((way(model, start, data, batch) for _ in range(repeat)), key=lambda r: r[0])


def main() -> None:
    """Time both ways on every workload and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("one torch thread; best of", args.repeat, "; SGD lr 0.05 momentum 0.9, 1 epoch")
    for name, (side, clients, samples, batch) in WORKLOADS.items():
        data = client_sets(side, clients, samples)
        model = build_model("cnn", {}, (3, side, side), 10, 0)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        loop(model, start, data[:2], batch), cohort(model, start, data[:2], batch)  # warm-up
        t_loop, w_loop = min(
            (loop(model, start, data, batch) for _ in range(args.repeat)), key=lambda r: r[0]
        )
        t_cohort, w_cohort = min(
            (cohort(model, start, data, batch) for _ in range(args.repeat)), key=lambda r: r[0]
        )
        gap = max(float((a[k] - b[k]).abs().max()) for a, b in zip(w_loop, w_cohort, strict=True) for k in a)
        steps = -(-samples // batch)
        print(
            f"{name:>9} ({clients} clients x {samples}, {steps} steps of {batch}): loop {t_loop:.3f} s, "
            f"cohort {t_cohort:.3f} s, {t_loop / t_cohort:.2f}x; largest weight difference {gap:.1e}"
        )


if __name__ == "__main__":
    main()
