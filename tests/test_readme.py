"""Every ``fedsim`` command of the README and of docs/*.md, run as a user types it.

Each command line found in a code block (fenced, or indented by four spaces) runs as
written, from the root of a fresh ``git clone`` of the working tree, with relative paths,
through the real console script. What the test may change, and nothing else:

- **Shortening**: options appended at the end of a long command, options a user could
  type (:data:`SHORTEN`); an appended option overrides one given earlier.
- **Placeholders**, filled from what the commands before printed: ``runs/NAME-<stamp>``
  (or ``runs/NAME-STAMP``) is the last run folder of NAME, ``STAMP2`` the one before it,
  ``RUN`` the last run folder of any name (``RUN RUN ...``: the last two), ``DIR`` a new
  folder, ``S`` (a seed) 0, ``HOST`` this machine when the block started the server.
- **Shell**: ``NAME=value`` assignments are applied, a ``for`` loop runs its body with
  the loop's first value (the other values give the same command with another value),
  and a ``[--option value]`` in brackets is typed without the brackets.

Commands that need another machine or hardware are listed in :data:`SKIPPED` with the
reason; a README command added later is run without editing this file. Long-running
servers (``fedsim edge serve``) are started in the background and stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import TIMING_KEYS, final_arrays
from tests.test_ray_runtime import leftover_processes

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))]

#: Options appended to a long command, by what it runs: (the command's kind, pattern searched
#: in the command as written, options). Every match applies. The kind of ``fedsim run FILE``
#: is the file's; ``fedsim edge train`` / ``edge bench`` are bottlefit / edge-bench.
SHORTEN: list[tuple[str, str, str]] = [
    ("fl", r"^fedsim run (?!.*--runtime ray)", "--stop-after 1 --set train.local_epochs=1"),
    ("fl", r"--runtime ray", "--set rounds=2"),
    ("fl", r"pfedpg", "--set algorithm.pretrain_epochs=1"),
    ("fl", r"pfedpg\w*_shapes", "--set data.options.num_train=1200 --set data.options.num_test=200"),
    (
        "fl",
        r"creamfl_shapes",
        "--set data.options.num_train=240 --set data.options.num_test=60 --set algorithm.public_size=60",
    ),
    ("resume", r"", "--stop-after 2"),
    ("pretrain", r"pfedpg", "--set algorithm.pretrain_epochs=1"),
    (
        "bottlefit",
        r"",
        "--set teacher.train.epochs=1 --set stage1.epochs=1 --set stage2.epochs=1 "
        "--set bottleneck_channels=[1] --set data.options.num_train=300 --set data.options.num_test=100",
    ),
    ("edge-bench", r"", "--set requests=3 --set warmup=1 --set devices=[rpi4] --set networks=[wifi]"),
    (
        "edge-bench",
        r"edge_bench_shapes",
        """--set 'model.set=["bottleneck_channels=[1]", "stage1.epochs=1", "stage2.epochs=1", """
        """"teacher.train.epochs=1", "data.options.num_train=300", "data.options.num_test=100"]'""",
    ),
    ("edge-bench", r"edge_bench_resnet18", "--set model.timing.channels=[3]"),
    ("edge-bench", r"edge_bench_adaptive", "--set model.timing.channels=[3] --set trace_interval_s=60"),
    ("worker", r"", "--requests 3 --warmup 1"),
]

#: Commands not run here (a substring of the command as written -> why).
SKIPPED: dict[str, str] = {
    "--runtime deployment --superlink HOST:9093": "a SuperLink on another machine (HOST); docs/deploy.md's "
    "loopback command runs below against a local SuperLink and two SuperNodes",
    "--set runtime.deployment.root_certificates=certs/ca.crt": "the TLS SuperLink of the guide's step 5 "
    "(certificates of step 3): tests/test_deployment.py::test_tls_topology_runs_a_scenario",
    "--tls-cert certs/server.crt": "the edge server with the guide's TLS certificates (step 3): "
    "tests/test_deployment.py::test_compose_edge_service_passes_its_health_check_plain_and_tls",
    "--server SERVER:50051": "a worker or health check on a board, against the server's address "
    "(SERVER), with a jtop or INA219 power meter",
    "--ray-address 127.0.0.1:6390": "the two-node Ray cluster of the 'ray start' lines: "
    "tests/test_ray_cluster.py::test_ray_address_runs_clients_on_both_nodes",
}

#: Background servers: (pattern, port a user's later commands reach it on).
SERVERS = [(r"^fedsim edge serve .*--port (\d+)", 1)]
#: Seconds one command may take here (the heaviest: a Ray run).
COMMAND_TIMEOUT_S = 300


# ------------------------------------------------------------------ reading the docs


def code_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(line number, lines) of every shell code block: fenced (bash/sh/none) or indented."""
    lines = text.splitlines()
    out: list[tuple[int, list[str]]] = []
    i, prev_blank = 0, True
    while i < len(lines):
        fence = re.match(r"^\s*```(\w*)", lines[i])
        if fence:
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            if fence.group(1) in ("", "bash", "sh", "shell"):
                out.append((i + 2, lines[i + 1 : j]))
            i, prev_blank = j + 1, False
            continue
        if prev_blank and lines[i].startswith("    ") and lines[i].strip():
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            out.append((i + 1, [line[4:] for line in lines[i:j]]))
            i, prev_blank = j, True
            continue
        prev_blank = not lines[i].strip()
        i += 1
    return out


@dataclass(frozen=True)
class Command:
    """One command line: where it is written (and its code block), as written, and its words
    after the shell's expansion."""

    where: str
    block: int
    written: str
    words: tuple[str, ...]


def _expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m[1] or m[2], m[0]), text)


def _statements(lines: list[str]) -> Iterator[tuple[int, str]]:
    """Logical lines (continuations joined, comments dropped), split at ``;``."""
    k = 0
    while k < len(lines):
        start, text = k, lines[k]
        while text.rstrip().endswith("\\") and k + 1 < len(lines):
            k += 1
            text = text.rstrip()[:-1].rstrip() + " " + lines[k].strip()
        k += 1
        text = re.sub(r"(^|\s)#.*$", "", text).strip()
        for part in re.split(r";\s*", text):
            if part.strip():
                yield start, part.strip()


def commands_of(doc: str) -> list[Command]:
    """The ``fedsim`` commands of a Markdown file, in order."""
    out: list[Command] = []
    for block, (first, lines) in enumerate(code_blocks((ROOT / doc).read_text())):
        env: dict[str, str] = {}
        for offset, stmt in _statements(lines):
            loop = re.match(r"^for (\w+) in (.*?)(?:\s+do)?$", stmt)
            if loop:  # the body runs with the first value
                env[loop[1]] = shlex.split(_expand(loop[2], env))[0] if loop[2].strip() else ""
                continue
            stmt = re.sub(r"^do\s+", "", stmt)
            if re.fullmatch(r"(\w+=(\"[^\"]*\"|'[^']*'|\S*)\s*)+", stmt):
                for name, value in re.findall(r"(\w+)=(\"[^\"]*\"|'[^']*'|\S*)", stmt):
                    env[name] = _expand(value.strip("\"'"), env)
                continue
            if not stmt.startswith("fedsim "):
                continue
            written = stmt
            text = re.sub(r"\[(--[^\]]+)\]", r"\1", _expand(stmt, env))
            out.append(Command(f"{doc}:{first + offset}", block, written, tuple(shlex.split(text))))
    return out


def _options(words: list[str], flag: str) -> list[str]:
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == flag]


def command_kind(words: list[str], clone: Path) -> str | None:
    """What a command runs: a file's kind for ``fedsim run FILE``, else the edge command's."""
    by_command = {
        ("edge", "train"): "bottlefit",
        ("edge", "bench"): "edge-bench",
        ("edge", "worker"): "worker",
    }
    if words[1:3] == ["run", "--resume"]:
        return "resume"
    if words[1] == "pretrain":
        return "pretrain"
    if words[1] == "run":
        from fedsim.loader import read_file

        return read_file(clone / words[2], _options(words, "--set")).kind
    return by_command.get(tuple(words[1:3]))  # type: ignore[arg-type]


def narrow_sweep(words: list[str], clone: Path) -> list[str]:
    """For ``fedsim run`` of a sweep: options keeping each key of its grid to its first value."""
    if words[1] != "run" or words[2] == "--resume":
        return []
    from fedsim.config.sweep import grid_keys
    from fedsim.loader import read_file

    contents = read_file(clone / words[2], _options(words, "--set"), _options(words, "--sweep"))
    if contents.sweep is None:
        return []
    out = []
    for key, values in grid_keys(contents.sweep, contents.source).items():
        out += ["--set", f"sweep.{key}={yaml.safe_dump([values[0]], default_flow_style=True).strip()}"]
    return out


def skip_reason(cmd: Command) -> str | None:
    """Why ``cmd`` is not run here, if it is not."""
    line = " ".join(cmd.words)
    return next((why for key, why in SKIPPED.items() if key in line), None)


# ------------------------------------------------------------------- running them


@dataclass
class Lane:
    """Commands run one after the other in one clone; remembers the run folders printed."""

    clone: Path
    env: dict[str, str]
    runs: list[Path] = field(default_factory=list)
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    hosts: set[int] = field(default_factory=set)
    log: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    done: set[tuple[str, ...]] = field(default_factory=set)

    def last_run(self, name: str | None = None, back: int = 0) -> str:
        found = [
            p
            for p in self.runs
            if name is None or re.fullmatch(rf"{re.escape(name)}-\d{{8}}-\d{{6}}(-\d+)?", p.name)
        ]
        if not found:  # a run made by an earlier lane in this clone
            pattern = f"{name}-*" if name else "*-*"
            found = sorted(p for p in (self.clone / "runs").glob(pattern) if p.is_dir())
        assert len(found) > back, f"no run folder of {name or 'any name'} printed before"
        return os.path.relpath(found[-1 - back], self.clone)

    def fill(self, words: tuple[str, ...]) -> list[str]:
        """Placeholders filled from the runs printed so far."""
        out: list[str] = []
        rest = list(words)
        while rest:
            w = rest.pop(0)
            if w == "RUN" and rest[:2] == ["RUN", "..."]:
                out += [self.last_run(back=1), self.last_run()]
                rest = rest[2:]
                continue
            w = re.sub(
                r"runs/([\w.-]+)-(<stamp>|STAMP2|STAMP)",
                lambda m: self.last_run(m[1], back=1 if m[2] == "STAMP2" else 0),
                w,
            )
            w = self.last_run() if w == "RUN" else w
            w = re.sub(r"(seed)=S$", r"\1=0", w)
            w = "dashboard-out" if w == "DIR" else w
            w = re.sub(r"^HOST:(\d+)$", lambda m: f"127.0.0.1:{m[1]}" if int(m[1]) in self.hosts else m[0], w)
            matches = sorted(str(p.relative_to(self.clone)) for p in self.clone.glob(w)) if "*" in w else []
            out += matches or [w]  # a pattern nothing matches stays as typed, as in bash
        return out

    def shortened(self, cmd: Command) -> list[str]:
        """The command, placeholders filled, with the options that shorten what it runs."""
        words = self.fill(cmd.words)
        line = " ".join(cmd.words)
        kind = command_kind(words, self.clone)
        extra = [
            o
            for k, pattern, opts in SHORTEN
            if k == kind and re.search(pattern, line)
            for o in shlex.split(opts)
        ]
        return [*words, *extra, *narrow_sweep(words, self.clone)]

    def run(self, cmd: Command) -> None:
        if skip_reason(cmd) is not None:
            return
        argv = self.shortened(cmd)
        if tuple(argv) in self.done:
            return
        self.done.add(tuple(argv))
        for pattern, group in SERVERS:
            found = re.search(pattern, " ".join(argv))
            if found:
                self.start_server(cmd, argv, int(found[group]))
                return
        t0 = time.monotonic()
        res = subprocess.run(
            [str(BIN / argv[0]), *argv[1:]],
            cwd=self.clone,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        self.log.append(f"{time.monotonic() - t0:6.1f} s  {cmd.where}  {shlex.join(argv)}")
        if res.returncode != 0:
            tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-6:])
            self.failures.append(f"{cmd.where}: {shlex.join(argv)}\n  exit {res.returncode}\n{tail}")
            return
        for found in re.findall(r"(/\S+/runs/[\w.-]+-\d{8}-\d{6}(?:-\d+)?)", res.stdout):
            path = Path(found)
            if path.is_dir() and path not in self.runs:
                self.runs.append(path)

    def start_server(self, cmd: Command, argv: list[str], port: int) -> None:
        log = open(self.clone / f"server-{port}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [str(BIN / argv[0]), *argv[1:]],
            cwd=self.clone,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        self.servers.append(proc)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                self.hosts.add(port)
                self.log.append(f"  (serving) {cmd.where}  {shlex.join(argv)}")
                return
            time.sleep(0.5)
        self.failures.append(
            f"{cmd.where}: {shlex.join(argv)} did not listen on {port}; see server-{port}.log"
        )

    def stop(self) -> None:
        for proc in self.servers:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                    break


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ``git clone`` of this checkout, with its uncommitted changes (what CI tests)."""
    target = tmp_path_factory.mktemp("readme") / "fedsim"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(target)], check=True)
    changed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for rel in filter(None, changed):
        src, dst = ROOT / rel, target / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        elif dst.exists():
            dst.unlink()
    return target


def lane_env(clone: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "400",  # rich wraps long lines at 80 columns when not on a terminal
        "FLWR_TELEMETRY_ENABLED": "0",
        "FEDSIM_CACHE": os.environ.get("FEDSIM_CACHE", str(clone / ".cache")),
    }


def run_lanes(
    clone: Path, lanes: list[list[Command]], before: Callable[[Lane, Command], None] | None = None
) -> list[Lane]:
    """Each list of commands in its own lane (the lanes side by side); servers stopped at the end."""

    def go(cmds: list[Command]) -> Lane:
        lane = Lane(clone, lane_env(clone))
        try:
            for cmd in cmds:
                if before is not None:
                    before(lane, cmd)
                lane.run(cmd)
        finally:
            lane.stop()
        return lane

    with ThreadPoolExecutor(len(lanes)) as pool:
        return list(pool.map(go, lanes))


# ------------------------------------------------------------------------- tests


def test_the_docs_are_read_as_a_user_reads_them() -> None:
    cmds = [c for doc in DOCS for c in commands_of(doc)]
    assert len(cmds) > 40
    by_where = {c.where: c for c in cmds}
    # a loop's body runs with the loop's first value; assignments are applied
    loops = [c for c in cmds if "$" in c.written and "for" not in c.written]
    assert loops and all("$" not in " ".join(c.words) for c in loops)
    assert any(w.endswith("creamfl_shapes_wide_clients.yaml") for c in cmds for w in c.words)
    # every skip names a command that is still in the docs (no stale entries)
    for key in SKIPPED:
        assert any(key in " ".join(c.words) for c in cmds), key
    assert all(c.words[0] == "fedsim" for c in by_where.values())


def test_code_blocks_and_statements_on_a_hand_made_page() -> None:
    page = "\n".join(
        [
            "text",
            "",
            '    X=a; Y="b c"',
            "    for s in 0 1 2; do",
            "      fedsim run $X --set seed=$s \\",
            "        --set y=$Y  # note",
            "    done",
            "",
            "```bash",
            "fedsim list models   # also datasets",
            "```",
        ]
    )
    blocks = code_blocks(page)
    assert [n for n, _ in blocks] == [3, 10]
    stmts = [s for _, s in _statements(blocks[0][1])]
    assert stmts == [
        "X=a",
        'Y="b c"',
        "for s in 0 1 2",
        "do",
        "fedsim run $X --set seed=$s --set y=$Y",
        "done",
    ]


@pytest.fixture
def guide_topology(clone: Path) -> Iterator[Callable[[Lane, Command], None]]:
    """Starts docs/deploy.md's insecure SuperLink (port 9093) and two SuperNodes, as its step 5
    says, with the partition files its step 4 exported, before the first command that needs them."""
    from tests.test_deployment import Topology, compose_services, free_port

    started: list[Topology] = []

    def before(lane: Lane, cmd: Command) -> None:
        if started or "--superlink 127.0.0.1:9093" not in " ".join(cmd.words) or skip_reason(cmd):
            return
        services = compose_services("docker-compose.yml")
        ports = {("superlink", "9093"): 9093} | {
            (s, "9094"): free_port() for s in services if "supernode" in s
        }
        logs = clone / "topology-logs"
        logs.mkdir(exist_ok=True)
        topo = Topology(services, {"./partitions": clone / "partitions"}, ports, [], logs)
        started.append(topo)
        topo.start("superlink")
        topo.wait_healthy("superlink")
        for svc in ("supernode-0", "supernode-1"):
            topo.start(svc)
            topo.wait_healthy(svc)

    try:
        yield before
    finally:
        for topo in started:
            topo.stop()


@pytest.mark.slow
def test_documented_commands_run_as_written_from_a_fresh_clone(clone: Path, guide_topology) -> None:
    readme = commands_of("README.md")
    guide = commands_of("docs/deploy.md")
    others = [c for doc in DOCS if doc not in ("README.md", "docs/deploy.md") for c in commands_of(doc)]
    # side by side: the README then the deployment guide (its SuperLink and SuperNodes), and
    # the other pages (results, the edge testbed)
    lanes = run_lanes(clone, [readme + guide, others], guide_topology)
    report = "\n".join(line for lane in lanes for line in lane.log)
    failures = [f for lane in lanes for f in lane.failures]
    assert not failures, "\n\n".join(failures) + "\n\nran:\n" + report
    print(report)
    skipped = [c.where for c in readme + guide + others if skip_reason(c)]
    assert len(report.splitlines()) + len(skipped) >= 45, report  # everything else ran (repeats once)
    # the guide's deployment command completed its round against the local SuperLink and SuperNodes
    summaries = {p: json.loads((p / "summary.json").read_text()) for p in lanes[0].runs}
    deployed = [s for s in summaries.values() if s.get("runtime") == "deployment"]
    assert deployed and deployed[0]["status"] == "stopped" and deployed[0]["rounds_completed"] == 1, summaries
    # README's Ray command (--set rounds=2 appended), from the clone's root, equals the in-process run
    (ray,) = [p for p, s in summaries.items() if s.get("runtime") == "ray"]
    assert summaries[ray]["status"] == "completed" and summaries[ray]["rounds_completed"] == 2
    res = subprocess.run(
        [str(BIN / "fedsim"), "run", "scenarios/quickstart.yaml", "--set", "rounds=2"],
        cwd=clone,
        env=lane_env(clone),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert res.returncode == 0, res.stderr
    inprocess = Path(re.findall(r"results in (\S+)", res.stdout)[-1])
    assert_same_metrics(_metric_rows(ray), _metric_rows(inprocess))
    wa, wb = final_arrays(inprocess), final_arrays(ray)
    assert wa.keys() == wb.keys() and all(np.allclose(wa[k], wb[k], atol=1e-5, rtol=0) for k in wa)
    assert (ray / "flower" / "run.log").exists() and not leftover_processes(ray)  # Flower's processes ended


def assert_same_metrics(a: list[dict], b: list[dict], tol: float = 1e-3) -> None:
    """Equal rows (every key, every round), floats within ``tol`` (test_ray_runtime: weights within
    1e-5 give accuracies within 1e-3)."""
    assert [r["round"] for r in a] == [r["round"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key, value in y.items():
            assert x[key] == (pytest.approx(value, abs=tol) if isinstance(value, float) else value), key


def _metric_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]
