"""docker-compose.yml, its TLS override, the Dockerfiles and scripts/gen-certs.sh, checked here.

There is no Docker engine on our machines: the files' structure is checked against what
they promise (services, partitions, volumes, health checks, consistent ports) and every
command's flags against the installed ``flower-superlink`` / ``flower-supernode`` /
``fedsim``; ``docker-compose config`` validates them where it is installed. The same
topology runs as plain processes in tests/test_deployment.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import click
import pytest
import typer
import yaml

from tests.test_deployment import compose_services

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
VARIANTS = [("docker-compose.yml",), ("docker-compose.yml", "docker-compose.tls.yml")]
IDS = ["plain", "tls"]


@cache
def help_flags(program: str, *sub: str) -> frozenset[str]:
    """The long options ``program [SUB...] --help`` lists."""
    out = subprocess.run([str(BIN / program), *sub, "--help"], capture_output=True, text=True, timeout=60)
    return frozenset(re.findall(r"(--[a-z][a-z0-9-]*)", out.stdout))


def fedsim_command(args: list[str]) -> tuple[click.Command, list[str]]:
    """The click command a ``fedsim ...`` argument list reaches, and the arguments left for it."""
    from fedsim.cli import app

    cmd: click.Command = typer.main.get_command(app)
    i = 1
    while isinstance(cmd, click.Group) and i < len(args) and args[i] in cmd.commands:
        cmd = cmd.commands[args[i]]
        i += 1
    return cmd, args[i:]


def check_command(args: list[str]) -> None:
    """Fail unless the installed program accepts this command line."""
    program = args[0]
    if program in ("flower-superlink", "flower-supernode"):
        unknown = {a for a in args[1:] if a.startswith("--")} - help_flags(program)
        assert not unknown, f"{program} has no {sorted(unknown)}"
        if "--node-config" in args:
            from flwr.common.config import parse_config_args

            assert parse_config_args([args[args.index("--node-config") + 1]])  # Flower's own parser
    elif program == "fedsim":
        cmd, rest = fedsim_command(args)
        assert not isinstance(cmd, click.Group), f"{args}: no such fedsim command"
        cmd.make_context(" ".join(args[:2]), list(rest), resilient_parsing=False)  # raises on bad flags
    elif program == "python":
        assert args[1] == "-c"
        compile(args[2], "<healthcheck>", "exec")
    else:
        raise AssertionError(f"unexpected program {program!r}")


def edge_serve_exists() -> bool:
    from fedsim.cli import app

    edge = typer.main.get_command(app).commands.get("edge")  # type: ignore[attr-defined]
    return isinstance(edge, click.Group) and {"serve", "health"} <= set(edge.commands)


def arg_after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def published(spec: dict[str, Any]) -> dict[str, str]:
    """container port -> host port of a service."""
    return {p.split(":")[1]: p.split(":")[0] for p in spec.get("ports", [])}


@pytest.mark.parametrize("files", VARIANTS, ids=IDS)
def test_compose_structure(files: tuple[str, ...]) -> None:
    services = compose_services(*files)
    link = services["superlink"]["command"]
    port = arg_after(link, "--port")
    assert link[0] == "flower-superlink" and arg_after(link, "--host") == "0.0.0.0"
    assert published(services["superlink"]) == {port: port}
    assert f":{port}/health" in services["superlink"]["healthcheck"]["test"][-1]
    tls = "docker-compose.tls.yml" in files
    assert ("--insecure" in link) != tls

    nodes = sorted(s for s in services if s.startswith("supernode-"))
    assert len(nodes) >= 2
    files_seen = set()
    for name in nodes:
        spec = services[name]
        cmd = spec["command"]
        assert cmd[0] == "flower-supernode" and arg_after(cmd, "--superlink") == f"superlink:{port}"
        assert ("--insecure" in cmd) != tls and ("--root-certificates" in cmd) == tls
        (part,) = re.findall(r'partition-file="([^"]+)"', arg_after(cmd, "--node-config"))
        mounts = {v.split(":")[1]: v.split(":")[0] for v in spec["volumes"]}
        assert part in mounts, f"{name}: {part} is not mounted"
        files_seen.add(mounts[part])
        assert f":{arg_after(cmd, '--port')}/health" in spec["healthcheck"]["test"][-1]
        assert spec["depends_on"]["superlink"]["condition"] == "service_healthy"
    assert len(files_seen) == len(nodes)  # each SuperNode has its own partition file

    edge = services["edge"]
    serve = edge["command"]
    assert serve[:4] == ["fedsim", "edge", "serve", "/models"]
    assert published(edge) == {arg_after(serve, "--port"): arg_after(serve, "--port")}
    health = edge["healthcheck"]["test"]
    assert health[1:4] == ["fedsim", "edge", "health"]
    assert arg_after(health, "--server").endswith(f":{arg_after(serve, '--port')}")
    assert ("--tls-cert" in serve) == tls == ("--tls-ca" in health)

    # run folders: a named volume, at the same path for the SuperLink and the submitter
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "runs" in compose["volumes"]
    assert "runs:/runs" in services["superlink"]["volumes"] and "runs:/runs" in services["fedsim"]["volumes"]
    run = services["fedsim"]["command"]
    assert "output.dir=/runs" in run and arg_after(run, "--superlink") == f"superlink:{port}"
    assert arg_after(run, "--runtime") == "deployment"
    if tls:  # certificate paths lie in what each service mounts
        for name, flags in [
            ("superlink", ("--ssl-certfile", "--ssl-keyfile", "--ssl-ca-certfile")),
            *[(n, ("--root-certificates",)) for n in nodes],
        ]:
            mounts = [v.split(":")[1] for v in services[name]["volumes"]]
            for flag in flags:
                path = arg_after(services[name]["command"], flag)
                assert any(path == m or path.startswith(m + "/") for m in mounts), (name, flag)
        (ca,) = [a.split("=", 1)[1] for a in run if a.startswith("runtime.deployment.root_certificates=")]
        assert ca in {v.split(":")[1] for v in services["fedsim"]["volumes"]}


@pytest.mark.parametrize("files", VARIANTS, ids=IDS)
def test_every_command_is_accepted_by_the_installed_tools(files: tuple[str, ...]) -> None:
    services = compose_services(*files)
    for name, spec in services.items():
        if name == "edge":
            continue  # checked below (another engineer's command)
        check_command(spec["command"])
        if "healthcheck" in spec:
            assert spec["healthcheck"]["test"][0] == "CMD"
            check_command(spec["healthcheck"]["test"][1:])


@pytest.mark.parametrize("files", VARIANTS, ids=IDS)
def test_edge_commands_are_accepted_by_fedsim_edge(files: tuple[str, ...]) -> None:
    if not edge_serve_exists():
        pytest.skip("fedsim edge serve/health do not exist yet (the edge tail server is being added)")
    edge = compose_services(*files)["edge"]
    check_command(edge["command"])
    check_command(edge["healthcheck"]["test"][1:])


def test_bad_flags_are_caught() -> None:  # the checker itself can fail
    with pytest.raises(AssertionError, match="has no"):
        check_command(["flower-supernode", "--superlink", "x:1", "--partition-file", "a"])
    with pytest.raises(click.UsageError):
        check_command(["fedsim", "run", "s.yaml", "--superlnk", "x:1"])
    with pytest.raises(click.ClickException):
        check_command(["flower-supernode", "--node-config", "partition-file=/data/client-0.npz"])


def docker_compose() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        res = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if res.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.mark.parametrize("files", VARIANTS, ids=IDS)
def test_docker_compose_config_validates(files: tuple[str, ...]) -> None:
    tool = docker_compose()
    if tool is None:
        pytest.skip("neither docker-compose nor 'docker compose' is installed")
    args = [a for f in files for a in ("-f", str(ROOT / f))]
    res = subprocess.run([*tool, *args, "config", "-q"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([*tool, *args, "config", "--services"], capture_output=True, text=True, timeout=120)
    assert {"superlink", "supernode-0", "supernode-1", "edge"} <= set(res.stdout.split())


@pytest.mark.parametrize(
    ("dockerfile", "base"),
    [
        ("Dockerfile", r"FROM python:3\.11"),
        ("Dockerfile.rpi", r"FROM --platform=linux/arm64 python:3\.11"),
        ("Dockerfile.jetson", r"ARG L4T_BASE=nvcr\.io/nvidia/l4t-base:r32"),
    ],
)
def test_dockerfiles_copy_what_exists(dockerfile: str, base: str) -> None:
    text = (ROOT / "docker" / dockerfile).read_text()
    assert re.search(base, text)
    copied = re.findall(r"^COPY (.+) \S+$", text, flags=re.M)
    assert copied
    for line in copied:
        for src in line.split():
            assert (ROOT / src).exists(), f"{dockerfile}: COPY {src} does not exist"
    assert re.search(r'pip install "?\.', text)
    if dockerfile == "Dockerfile.jetson":
        assert "python=3.11" in text  # its own Python: no JetPack ships 3.11


def test_gen_certs_script(tmp_path: Path) -> None:
    from cryptography import x509

    res = subprocess.run(
        [str(ROOT / "scripts" / "gen-certs.sh"), str(tmp_path), "superlink", "10.0.0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    for name in ("ca.crt", "ca.key", "server.crt", "server.key", "server.pem", "token"):
        assert (tmp_path / name).stat().st_size > 0
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((tmp_path / "server.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["superlink"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    token = (tmp_path / "token").read_text()
    subprocess.run([str(ROOT / "scripts" / "gen-certs.sh"), str(tmp_path)], check=True, capture_output=True)
    assert (tmp_path / "token").read_text() == token  # kept: servers already hold it
    assert subprocess.run([str(ROOT / "scripts" / "gen-certs.sh")], capture_output=True).returncode == 2


CHECKED_PROGRAMS = ("fedsim", "flower-superlink", "flower-supernode")


def guide_blocks() -> list[tuple[str, list[str]]]:
    """(test comment, command lines) of every bash block in docs/deploy.md."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"(?:<!-- test: (.*?) -->\n)?```bash\n(.*?)```", text, flags=re.S)
    return [(note, [ln for ln in body.splitlines() if ln.strip()]) for note, body in blocks]


def test_guide_commands_are_checked() -> None:
    import shlex

    blocks = guide_blocks()
    assert len(blocks) >= 8
    checked = 0
    for note, lines in blocks:
        assert note, f"a bash block in docs/deploy.md names no test: {lines[0]}"
        for ref in re.findall(r"(tests/[\w/]+\.py)::(\w+)", note):
            source = (ROOT / ref[0]).read_text()
            assert f"def {ref[1]}(" in source, f"docs/deploy.md names a missing test {ref[0]}::{ref[1]}"
        for line in lines:
            args = shlex.split(line.split("  #")[0])
            if args[0] == "scripts/gen-certs.sh":
                assert (ROOT / args[0]).is_file()
                continue
            if args[0] == "docker" and args[1] == "compose":
                files = [args[i + 1] for i, a in enumerate(args) if a == "-f"]
                assert all((ROOT / f).is_file() for f in files)
                assert set(args) & {"up", "run"}
                continue
            if args[0] == "docker" and args[1] == "build":
                assert (ROOT / args[args.index("-f") + 1]).is_file()
                continue
            if args[0] == "ray":
                assert args[1] == "start"
                unknown = {a for a in args[2:] if a.startswith("--")} - help_flags("ray", "start")
                assert not unknown, f"ray start has no {sorted(unknown)}"
                checked += 1
                continue
            start = next(i for i, a in enumerate(args) if a in CHECKED_PROGRAMS)  # docker run ... PROGRAM
            check_command(args[start:])
            checked += 1
    assert checked >= 15
