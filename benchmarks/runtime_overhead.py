"""Runtime overhead: the same FedAvg workload several ways, timed in one process run.

1. ``plain``: a bare PyTorch loop, no framework, one thread (the reference);
2. ``inprocess``: fedsim's in-process Grid (``w1``), and its clients sharded over two
   worker processes (``w2``, ``runtime.workers: 2``);
3. ``ray-fedsim``: the same two workers as Ray actors (``runtime.engine: fedsim``);
4. ``ray``: Flower's Simulation Engine through ``flwr run`` (``engine: flower``).

Workloads (small CNN, 1 local epoch, batch 10, 3 rounds, no evaluation):
``100x50``: 100 clients x 50 samples, all clients every round;
``1000x50``: 1,000 clients x 50 samples, 50 sampled per round.

Prints, per way, the seconds of the whole run (best of --repeat for plain and ``w1``;
the others once, their start-up included) and of one round after the first (the mean of
rounds 2 and 3, from metrics.jsonl: what a long run pays per round), then ratios against
``w1`` measured in the same run. Run:

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


#: way -> its runtime section
WAYS = {
    "w1": {"name": "inprocess"},
    "w2": {"name": "inprocess", "workers": 2},
    "ray-fedsim": {"name": "ray", "engine": "fedsim", "workers": 2},
    "ray": {"name": "ray"},
}


def scenario_dict(num_clients: int, fraction: float, out: Path, runtime: dict) -> dict:
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
        "runtime": runtime,
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


def framework_run(path: Path) -> tuple[float, float]:
    """A fedsim run's seconds, and its mean round after the first (this process's data caches
    are warm, as for the plain loop; workers build their own inside the first round)."""
    sc = load_scenario(path)
    for pid in range(sc.clients.num):
        client_data(sc, pid)
    t0 = time.perf_counter()
    folder, _ = start_run(path, [], None, False, False, Console(quiet=True))
    total = time.perf_counter() - t0
    elapsed = [r["elapsed_s"] for r in folder.read("metrics.jsonl") if r["round"] >= 1]
    return total, float(np.mean(np.diff(elapsed))) if len(elapsed) > 1 else float("nan")


def main() -> None:
    """Run the benchmark and print a table of seconds and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--shapes", default=",".join(WORKLOADS))
    parser.add_argument("--repeat", type=int, default=3, help="best of N for plain and w1")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch threads: {torch.get_num_threads()} per process; total s / s per round after the first")
    ways = [w for w in WAYS if not (args.skip_ray and w.startswith("ray"))]
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            n, frac = WORKLOADS[shape]
            got: dict[str, tuple[float, float]] = {}
            for way in ways:
                path = Path(tmp) / f"{shape}-{way}.yaml"
                path.write_text(yaml.safe_dump(scenario_dict(n, frac, Path(tmp) / "runs", WAYS[way])))
                if way == "w1":
                    plain_loop(path)  # warm-up (first torch calls)
                    plain = min(plain_loop(path) for _ in range(args.repeat))
                    got["plain"] = (plain, plain / 3)
                    got[way] = min((framework_run(path) for _ in range(args.repeat)), key=lambda t: t[0])
                else:
                    got[way] = framework_run(path)
            line = "  ".join(f"{k} {t:6.2f}/{r:5.2f}" for k, (t, r) in got.items())
            w1 = got["w1"][1]
            ratios = "  ".join(f"{k} {w1 / r:.2f}x" for k, (_, r) in got.items() if k not in ("plain", "w1"))
            print(f"{shape:>8}: {line}  |  per-round speed-up against w1: {ratios}")


if __name__ == "__main__":
    main()
