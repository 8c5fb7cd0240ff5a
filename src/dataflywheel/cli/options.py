"""Options shared by several commands, and the console they print to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Path to flywheel.yaml.")]
DEFAULT_CONFIG = Path("flywheel.yaml")


def console(stderr: bool = False) -> Any:
    """Rich console; lines never wrap, and output to a pipe or file gets a wide table width."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not out.is_terminal:
        out.width = 160
    return out


def logger(stderr: bool = False) -> Any:
    out = console(stderr)
    return lambda msg: out.print(msg, markup=False, soft_wrap=True)
