"""System-model overhead: the same 1,000-client FedAvg run with and without ``system:``.

Workload (as ``runtime_overhead.py``'s 1000x50): shapes 16x16, 1,000 clients x 50
samples, 50 sampled per round, small CNN, 1 local epoch, batch 10, 3 rounds, no
evaluation, in-process runtime, one torch thread. ``with`` adds a system section: three
device/network profiles, Markov availability (so the sampler filters 1,000 clients each
round), a deadline, per-client timing and energy rows, FLOP counting at start-up.

Both variants train the same number of clients on the same amount of data; runs are
interleaved and the best of ``--repeat`` is kept. Prints both times and the ratio
(target: below 1.05), and, as a figure that the machine's load does not blur, the
seconds spent inside the system model itself (its methods timed in the ``with`` runs:
FLOP counting, availability, sampling set, timing, energy, rows). Run:

    python benchmarks/system_overhead.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml
from rich.console import Console

from fedsim.loader import load_scenario
from fedsim.runner import start_run
from fedsim.system import clock, compute
from fedsim.workspace import client_data

#: Seconds spent inside the system model (filled by :func:`instrument`).
INSIDE = [0.0]

SYSTEM = {
    "mix": [
        {"share": 0.6, "device": "rpi4", "network": "wifi"},
        {"share": 0.3, "device": "jetson-nano", "network": "lte"},
        {"share": 0.1, "device": "jetson-orin", "network": "wifi"},
    ],
    "availability": {"model": "markov", "mean_on_s": 30.0, "mean_off_s": 15.0},
    "round": {"policy": "deadline", "deadline_s": 1.0},
}


def scenario_dict(out: Path, system: bool) -> dict:
    """1,000 clients x 50 samples of shapes 16x16, 50 per round; optionally the system model."""
    sc = {
        "name": f"sysbench-{'with' if system else 'without'}",
        "seed": 0,
        "rounds": 3,
        "data": {
            "dataset": "shapes",
            "options": {"image_size": 16, "num_train": 1000 * 50, "num_test": 200},
            "partition": {"name": "iid"},
        },
        "model": {"name": "cnn"},
        "algorithm": {"name": "fedavg"},
        "clients": {"num": 1000, "fraction": 0.05, "min": 1},
        "train": {"local_epochs": 1, "batch_size": 10, "optimizer": {"name": "sgd", "lr": 0.05}},
        "evaluation": {"server_every": 0, "clients_every": 0},
        "output": {"dir": str(out)},
    }
    if system:
        sc["system"] = SYSTEM
    return sc


def instrument() -> None:
    """Time every entry point of the system model the round loop calls."""

    def timed(fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                INSIDE[0] += time.perf_counter() - t0

        return wrapper

    for name in ("__init__", "start_round", "settle", "metrics"):
        setattr(clock.SystemModel, name, timed(getattr(clock.SystemModel, name)))
    compute.COMPUTE_MODELS["flops"] = timed(compute.COMPUTE_MODELS["flops"])


def timed_run(path: Path) -> float:
    """Seconds of one complete in-process run (data caches warmed beforehand)."""
    t0 = time.perf_counter()
    start_run(path, [], None, False, False, Console(quiet=True))
    return time.perf_counter() - t0


def main() -> None:
    """Run both variants interleaved and print the best times and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="best of N for each variant")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for system in (False, True):
            path = Path(tmp) / f"{system}.yaml"
            path.write_text(yaml.safe_dump(scenario_dict(Path(tmp) / "runs", system)))
            paths[system] = path
        for path in paths.values():  # warm the per-client data caches of both variants
            sc = load_scenario(path)
            for pid in range(sc.clients.num):
                client_data(sc, pid)
        timed_run(paths[False])  # warm-up (first torch calls, imports)
        instrument()
        times: dict[bool, list[float]] = {False: [], True: []}
        inside: list[float] = []
        for _ in range(args.repeat):
            for system in (False, True):
                INSIDE[0] = 0.0
                times[system].append(timed_run(paths[system]))
                if system:
                    inside.append(INSIDE[0])
    without, with_ = min(times[False]), min(times[True])
    print(f"1,000 clients, 50 per round, 3 rounds: without {without:.2f} s  with {with_:.2f} s")
    print(f"ratio with/without: {with_ / without:.3f}x")
    print(
        f"inside the system model per run: first {inside[0]:.3f} s (FLOP counting), "
        f"then {min(inside[1:], default=inside[0]):.3f} s = "
        f"{min(inside[1:], default=inside[0]) / without:.2%} of the run without it"
    )
    rounded = {("with" if k else "without"): [round(v, 2) for v in t] for k, t in times.items()}
    print("all times (s):", rounded)


if __name__ == "__main__":
    main()
