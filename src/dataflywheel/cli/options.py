"""Options shared by several commands, and the console they print to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

CONFIG_ENV = ("FLYWHEEL_CONFIG", "FLYWHEEL_PROJECT")
"""Environment variables naming flywheel.yaml, or the project folder that holds it."""
ConfigOpt = Annotated[Path, typer.Option(
    "--config", "-c", envvar=list(CONFIG_ENV), show_envvar=True,
    help="Path to flywheel.yaml, or the project folder holding it.")]
DEFAULT_CONFIG = Path("flywheel.yaml")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def print_json(doc: object) -> None:
    import json

    typer.echo(json.dumps(doc, indent=2, default=str))


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
