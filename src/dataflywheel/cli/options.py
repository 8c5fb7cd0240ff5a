"""Options shared by several commands, and the console they print to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Path to flywheel.yaml.")]
DEFAULT_CONFIG = Path("flywheel.yaml")


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def logger(stderr: bool = False) -> Any:
    out = console(stderr)
    return lambda msg: out.print(msg, markup=False, soft_wrap=True)
