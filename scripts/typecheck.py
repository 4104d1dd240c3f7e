"""Type-check the fedsim import package as it installs: ``fedsim`` with ``clients/`` and ``edge/``
inside it as ``fedsim.clients`` and ``fedsim.edge`` (setup.py's mapping).

mypy finds modules by folder, so this builds that layout from symlinks in ``.typecheck/``
(git-ignored), runs mypy on it with the settings of pyproject.toml, and prints the errors
with the repository's own paths (``edge/worker.py``, not ``.typecheck/fedsim/edge/worker.py``).
Run by ``make test`` and ``make lint``:  python scripts/typecheck.py
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FARM = ROOT / ".typecheck"
#: import package -> folder at the repository's root (as in setup.py)
MAPPED = {"clients": "clients", "edge": "edge"}


def build_farm() -> Path:
    """``.typecheck/fedsim/`` with a symlink to every entry of fedsim/ plus clients/ and edge/.

    Synced, not rebuilt, so runs side by side don't pull it from under each other."""
    package = FARM / "fedsim"
    package.mkdir(parents=True, exist_ok=True)
    wanted = {c.name: c for c in (ROOT / "fedsim").iterdir() if c.name != "__pycache__"}
    wanted |= {name: ROOT / folder for name, folder in MAPPED.items()}
    for link in package.iterdir():
        if link.name not in wanted or not link.exists():
            link.unlink(missing_ok=True)
    for name, target in wanted.items():
        with contextlib.suppress(FileExistsError):
            (package / name).symlink_to(target)
    return package


def repo_path(line: str) -> str:
    """An error line with the farm's path replaced by the repository's."""
    line = line.replace(".typecheck/", "")
    for name, folder in MAPPED.items():
        line = re.sub(rf"^fedsim/{name}/", f"{folder}/", line)
    return line


def main() -> int:
    build_farm()
    config = ["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(ROOT / ".mypy_cache")]
    cmd = [sys.executable, "-m", "mypy", *config, "-p", "fedsim"]
    res = subprocess.run(cmd, cwd=FARM, capture_output=True, text=True)
    for line in (res.stdout + res.stderr).splitlines():
        print(repo_path(line))
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
