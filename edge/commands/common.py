"""What the ``fedsim edge`` commands share: the console, common options, small checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedsim.errors import UserError

console = Console()
if not console.is_terminal:  # wide tables stay readable in logs and pipes
    console = Console(width=160)

SetOption = Annotated[list[str] | None, typer.Option("--set", help="Override KEY.PATH=VALUE (repeatable).")]
ThreadsOption = Annotated[int, typer.Option(help="Torch intra-op threads (0: torch's default).", min=0)]


def set_threads(n: int) -> None:
    """Set torch's intra-op threads (0: leave torch's default)."""
    if n:
        import torch

        torch.set_num_threads(n)


def read_token(path: Path | None) -> str | None:
    """The bearer token in ``path`` (None without a file)."""
    if path is None:
        return None
    if not path.is_file():
        raise UserError(f"--token-file {path}: no such file; expected a file holding the bearer token")
    token = path.read_text().strip()
    if not token:
        raise UserError(f"--token-file {path} is empty; expected the bearer token")
    return token


def existing(path: Path | None, flag: str, what: str) -> Path | None:
    """``path`` when it is a file (or None); a UserError naming ``flag`` otherwise."""
    if path is not None and not path.is_file():
        raise UserError(f"{flag} {path}: no such file; expected {what}")
    return path
