"""Runtime overhead: the same FedAvg workload three ways, timed in one process run.

1. ``plain``: a bare PyTorch loop, no framework (the lower bound);
2. ``inprocess``: fedsim's in-process Grid;
3. ``ray``: Flower's Simulation Engine through ``flwr run``.

Workloads (small CNN, 1 local epoch, batch 10, 3 rounds, no evaluation):
``100x50``: 100 clients x 50 samples, all clients every round;
``1000x50``: 1,000 clients x 50 samples, 50 sampled per round.

Prints seconds (best of --repeat for plain and inprocess; ray once, its start-up
included) and the ratios inprocess/plain and ray/inprocess. Run:

    python benchmarks/runtime_overhead.py [--skip-ray] [--shapes 100x50,1000x50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from rich.console import Console

from fedsim.loader import load_scenario
from fedsim.runner import start_run
from fedsim.training import derive_seed, make_optimizer, train_epochs
from fedsim.workspace import client_data, federated_data, new_model

WORKLOADS = {"100x50": (100, 1.0), "1000x50": (1000, 0.05)}


def scenario_dict(num_clients: int, fraction: float, out: Path, runtime: str) -> dict:
    """The benchmark scenario: shapes 16x16, exactly 50 samples per client (iid)."""
    return {
        "name": f"bench-{num_clients}",
        "seed": 0,
        "rounds": 3,
        "data": {
            "dataset": "shapes",
            "options": {"image_size": 16, "num_train": num_clients * 50, "num_test": 200},
            "partition": {"name": "iid"},
        },
        "model": {"name": "cnn"},
        "algorithm": {"name": "fedavg"},
        "clients": {"num": num_clients, "fraction": fraction, "min": 1},
        "train": {"local_epochs": 1, "batch_size": 10, "optimizer": {"name": "sgd", "lr": 0.05}},
        "evaluation": {"server_every": 0, "clients_every": 0},
        "runtime": {"name": runtime},
        "output": {"dir": str(out)},
    }


def plain_loop(path: Path) -> float:
    """FedAvg with no framework: same data, model, sampling size and optimiser."""
    sc = load_scenario(path)
    federated_data(sc)
    model = new_model(sc)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    t0 = time.perf_counter()
    for rnd in range(1, sc.rounds + 1):
        rng = np.random.default_rng([sc.seed, rnd])
        cohort = rng.choice(sc.clients.num, size=sc.clients.per_round(), replace=False)
        total = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in global_state.items()}
        n_total = 0
        for pid in cohort:
            data = client_data(sc, int(pid))
            model.load_state_dict(global_state)
            g = torch.Generator().manual_seed(derive_seed(sc.seed, rnd, int(pid)))
            stats = train_epochs(
                model,
                data.x_train,
                data.y_train,
                epochs=1,
                batch_size=sc.train.batch_size,
                optimizer=make_optimizer(model.parameters(), sc.train.optimizer),
                generator=g,
            )
            for k, v in model.state_dict().items():
                total[k] += v.float() * stats.num_examples
            n_total += stats.num_examples
        global_state = {k: (v / n_total).to(global_state[k].dtype) for k, v in total.items()}
    return time.perf_counter() - t0


def framework_run(path: Path) -> float:
    """Time a fedsim run (folder creation and data loading excluded by warming first)."""
    sc = load_scenario(path)
    for pid in range(sc.clients.num):
        client_data(sc, pid)  # same warm caches as the plain loop
    t0 = time.perf_counter()
    start_run(path, [], None, False, False, Console(quiet=True))
    return time.perf_counter() - t0


def main() -> None:
    """Run the benchmark and print a table of seconds and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--shapes", default=",".join(WORKLOADS))
    parser.add_argument("--repeat", type=int, default=3, help="best of N for plain and inprocess")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch threads: {torch.get_num_threads()} (all three ways run single-threaded per process)")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            n, frac = WORKLOADS[shape]
            times: dict[str, float] = {}
            for runtime in ["inprocess"] + ([] if args.skip_ray else ["ray"]):
                path = Path(tmp) / f"{shape}-{runtime}.yaml"
                path.write_text(yaml.safe_dump(scenario_dict(n, frac, Path(tmp) / "runs", runtime)))
                if runtime == "inprocess":
                    plain_loop(path)  # warm-up (first torch calls)
                    times["plain"] = min(plain_loop(path) for _ in range(args.repeat))
                    times[runtime] = min(framework_run(path) for _ in range(args.repeat))
                else:
                    times[runtime] = framework_run(path)
            line = "  ".join(f"{k} {v:6.2f}s" for k, v in times.items())
            ratios = f"inprocess/plain {times['inprocess'] / times['plain']:.2f}x"
            if "ray" in times:
                ratios += f"  ray/inprocess {times['ray'] / times['inprocess']:.2f}x"
            print(f"{shape:>8}: {line}  |  {ratios}")


if __name__ == "__main__":
    main()
