"""A run killed with SIGKILL at random moments, then resumed, against the same run uninterrupted.

The quickstart scenario (shortened: ``--rounds``, a checkpoint every round) runs once
uninterrupted. Then, ``--kills`` times: a fresh run is killed (SIGKILL to its process group)
at a random moment, resumed with ``fedsim run --resume``, that resume itself killed at a
random moment, and resumed again to the end. Each finished run's metrics.jsonl (every key but
the wall-clock ``elapsed_s``: losses, accuracies, byte counts) is compared with the uninterrupted run's.
Prints the kills tried and how many runs came out identical. Run:

    python benchmarks/kill_resume.py [--kills 4] [--rounds 6] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.yaml"
FEDSIM = [sys.executable, "-m", "fedsim.cli"]


def rows(run: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock column."""
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        row.pop("elapsed_s", None)
        out.append(row)
    return out


def start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*FEDSIM, *args, "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def killed_after(args: list[str], seconds: float) -> bool:
    """Run ``fedsim args``; SIGKILL it after ``seconds`` unless it ended first (True: killed)."""
    proc = start(args)
    try:
        proc.wait(seconds)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def main() -> None:
    """Kill, resume, compare; print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=4, help="runs killed (each also killed in its resume)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill moments")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        sets = ["--set", f"rounds={args.rounds}", "--set", "output.checkpoint_every=1"]
        ref_dir = Path(tmp) / "reference"
        t0 = time.monotonic()
        subprocess.run(
            [*FEDSIM, "run", str(SCENARIO), *sets, "--set", f"output.dir={ref_dir}", "-q"], check=True
        )
        whole = time.monotonic() - t0
        (reference,) = ref_dir.iterdir()
        expected = rows(reference)
        identical, kills = 0, 0
        for k in range(args.kills):
            out = Path(tmp) / f"killed-{k}"
            first = rng.uniform(0.3, 0.9) * whole
            kills += killed_after(["run", str(SCENARIO), *sets, "--set", f"output.dir={out}"], first)
            runs = list(out.iterdir()) if out.exists() else []
            if not runs:  # killed before its folder existed: nothing to resume
                print(f"  run {k}: killed at {first:.1f} s, before its run folder existed")
                continue
            run = runs[0]
            second = rng.uniform(0.1, 0.5) * whole
            again = killed_after(["run", "--resume", str(run)], second)
            kills += again
            subprocess.run([*FEDSIM, "run", "--resume", str(run), "-q"], check=True, capture_output=True)
            same = rows(run) == expected
            identical += same
            resumed = f"its resume killed at {second:.1f} s" if again else "its resume finished first"
            print(f"  run {k}: killed at {first:.1f} s, {resumed}; identical: {same}")
        print(
            f"{kills} kills (SIGKILL) over {args.kills} runs of {args.rounds} rounds "
            f"(uninterrupted: {whole:.1f} s); identical to the uninterrupted run: {identical} of {args.kills}"
        )


if __name__ == "__main__":
    main()
