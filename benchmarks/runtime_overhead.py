"""Runtime overhead and scale: the same FedAvg workload several ways, each in its own process.

1. ``plain``: a bare PyTorch loop, no framework, one thread (the reference);
2. ``w1``: fedsim's in-process runtime, one process; ``w2``: its clients sharded over two
   worker processes (``runtime.workers: 2``); ``v1`` and ``v2``: the same with each round's
   clients trained as vectorised cohorts (``train.vectorise: on``);
3. ``ray-fedsim``: the same two workers as Ray actors (``runtime.engine: fedsim``);
4. ``ray``: Flower's Simulation Engine through ``flwr run`` (``engine: flower``).

Workloads (shapes 16x16, small CNN, 1 local epoch, batch 10, 3 rounds, no evaluation):
``100x50`` (100 clients x 50 samples, all every round), ``1000x50`` (cohort 50),
``10000x20`` and ``100000x10`` (cohort 100); ``fedloge10000x20`` is the 10,000-client
workload with FedLoGe (each sampled client keeps its local head), cohort 50.

Each workload's data set is generated first, into a fresh cache folder (the ``data``
column: seconds, both splits and the partition; a one-round run then fills the other
one-time caches). Then each way runs in a fresh process, timed from outside: the whole
run's seconds, the mean round after the first (rounds 2 and 3 from metrics.jsonl), start-up
(the run's seconds before its first round: imports, reading the cached data, building the
grid and the workers), and the peak memory the machine used above its idle level while the
way ran (sampled every 0.05 s; the cached data set itself lives in the operating system's
file cache, shared, and is not counted). Ratios are against ``w1``
measured in the same run. Run:

    python benchmarks/runtime_overhead.py [--workloads 100x50,1000x50] [--ways w1,w2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

#: name -> (clients, samples per client, cohort, algorithm)
WORKLOADS = {
    "100x50": (100, 50, 100, "fedavg"),
    "1000x50": (1000, 50, 50, "fedavg"),
    "10000x20": (10_000, 20, 100, "fedavg"),
    "100000x10": (100_000, 10, 100, "fedavg"),
    "fedloge10000x20": (10_000, 20, 50, "fedloge"),
}
DEFAULT_WORKLOADS = "100x50,1000x50,10000x20,100000x10,fedloge10000x20"

#: ways whose clients train as vectorised cohorts (train.vectorise: on), and the algorithms
#: that have a cohort trainer
VECTORISED = {"v1", "v2"}
COHORT_ALGORITHMS = {"fedavg", "fedprox", "fedloge"}
#: way -> its runtime section (plain: no runtime)
WAYS = {
    "plain": None,
    "w1": {"name": "inprocess", "threads": 1},
    "w2": {"name": "inprocess", "workers": 2, "threads": 1},
    "v1": {"name": "inprocess", "threads": 1},
    "v2": {"name": "inprocess", "workers": 2, "threads": 1},
    "ray-fedsim": {"name": "ray", "engine": "fedsim", "workers": 2, "threads": 1},
    "ray": {"name": "ray"},
}


def scenario_dict(workload: str, out: Path, way: str) -> dict:
    """The benchmark scenario: shapes 16x16, exactly the workload's samples per client (iid)."""
    clients, samples, cohort, algorithm = WORKLOADS[workload]
    return {
        "name": f"bench-{workload}",
        "seed": 0,
        "rounds": 3,
        "data": {
            "dataset": "shapes",
            "options": {"image_size": 16, "num_train": clients * samples, "num_test": 200},
            "partition": {"name": "iid"},
        },
        "model": {"name": "cnn"},
        "algorithm": {"name": algorithm},
        "clients": {"num": clients, "fraction": cohort / clients, "min": 1},
        "train": {
            "local_epochs": 1,
            "batch_size": 10,
            "optimizer": {"name": "sgd", "lr": 0.05},
            "vectorise": "on" if way in VECTORISED else "off",
        },
        "evaluation": {"server_every": 0, "clients_every": 0},
        "runtime": WAYS.get(way) or {"name": "inprocess"},
        "output": {"dir": str(out)},
    }


def plain_loop(path: Path) -> tuple[float, float]:
    """FedAvg with no framework: same data, model, sampling size and optimiser."""
    import torch

    from fedsim.loader import load_scenario
    from fedsim.training import derive_seed, make_optimizer, train_epochs
    from fedsim.workspace import client_data, federated_data, new_model

    sc = load_scenario(path)
    federated_data(sc)
    model = new_model(sc)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    t0 = time.perf_counter()
    ends = []
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
        ends.append(time.perf_counter() - t0)
    return ends[-1], float(np.mean(np.diff(ends)))


def child(way: str, path: Path) -> dict:
    """Run one way in this (fresh) process; seconds of the whole run, per round and start-up."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if way == "plain":
        loop, per_round = plain_loop(path)
        total = time.perf_counter() - t0
        return {"total": total, "round": per_round, "startup": total - loop}
    from rich.console import Console

    from fedsim.runner import start_run

    folder, _ = start_run(path, [], None, False, False, Console(quiet=True))
    total = time.perf_counter() - t0
    elapsed = [r["elapsed_s"] for r in folder.read("metrics.jsonl") if r["round"] >= 1]
    return {"total": total, "round": float(np.mean(np.diff(elapsed))), "startup": total - elapsed[-1]}


def prepare(path: Path) -> dict:
    """Generate and cache the workload's data set and partition (its seconds), then fill
    fedsim's other one-time caches (FedLoGe's classifier) with a one-round run, untimed."""
    from rich.console import Console

    from fedsim.loader import load_scenario
    from fedsim.runner import start_run
    from fedsim.workspace import federated_data

    t0 = time.perf_counter()
    federated_data(load_scenario(path))
    seconds = time.perf_counter() - t0
    start_run(path, ["rounds=1"], None, False, False, Console(quiet=True))
    return {"total": seconds}


def measured(args: list[str], env: dict[str, str]) -> tuple[dict, float]:
    """Run this script with ``args`` in a new process: its JSON answer, and the peak GB the
    machine used above its level just before (sampled every 0.05 s)."""
    idle = psutil.virtual_memory().used
    peak = [idle]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], psutil.virtual_memory().used)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    done.set()
    sampler.join()
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), (peak[0] - idle) / 1e9


def main() -> None:
    """Run the benchmark and print a table of seconds, memory and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default=DEFAULT_WORKLOADS)
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--skip-ray", action="store_true", help="leave out both Ray ways")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = prepare(args.scenario) if args.child == "prepare" else child(args.child, args.scenario)
        print(json.dumps(result))
        return
    ways = [w for w in args.ways.split(",") if not (args.skip_ray and w.startswith("ray"))]
    print("one torch thread per process; cells: run s / s per round after the first / start-up s / peak GB")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "FEDSIM_CACHE": str(Path(tmp) / "cache")}
        for workload in args.workloads.split(","):
            got: dict[str, dict] = {}
            for way in ["prepare", *ways]:
                if way in VECTORISED and WORKLOADS[workload][3] not in COHORT_ALGORITHMS:
                    continue
                path = Path(tmp) / f"{workload}-{way}.yaml"
                path.write_text(yaml.safe_dump(scenario_dict(workload, Path(tmp) / "runs", way)))
                result, peak = measured(["--child", way, "--scenario", str(path)], env)
                got[way] = {**result, "peak_gb": peak}
                shown = {k: round(v, 3) for k, v in got[way].items()}
                print(f"  {workload} {way}: {json.dumps(shown)}", flush=True)
            report(workload, got)


def report(workload: str, got: dict[str, dict]) -> None:
    """One line per workload: every way's cells and the per-round ratios against w1."""
    clients = WORKLOADS[workload][0]
    cells = "  ".join(
        f"{k} {v['total']:.2f}/{v['round']:.3f}/{v['startup']:.2f}/{v['peak_gb']:.2f}"
        for k, v in got.items()
        if k != "prepare"
    )
    line = f"{workload}: data {got['prepare']['total']:.1f} s ({got['prepare']['peak_gb']:.2f} GB)  {cells}"
    if "w1" in got:
        w1 = got["w1"]["round"]
        others = {k: v for k, v in got.items() if k not in ("prepare", "w1")}
        ratios = "  ".join(f"{k} {w1 / v['round']:.2f}x" for k, v in others.items())
        startup = got["w1"]["startup"] / clients * 1000
        line += f"  |  per-round speed-up against w1: {ratios}  |  w1 start-up {startup:.3f} ms per client"
    print(line, flush=True)


if __name__ == "__main__":
    main()
