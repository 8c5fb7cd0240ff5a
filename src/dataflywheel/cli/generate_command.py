"""``flywheel generate``: a generation model's answer to one prompt, streamed to the terminal."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dataflywheel.cli.options import DEFAULT_CONFIG, ConfigOpt


def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt (one user turn), or - to read it from stdin.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Alias, version (3 or v3) or a bundle folder.")]
    = "champion",
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="New tokens at most.")] = 256,
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Answer PROMPT with a generation model (greedy), printing the answer as it is decoded."""
    from dataflywheel.api import load_model
    from dataflywheel.registry.generation import stream

    text = sys.stdin.read() if prompt == "-" else prompt
    predictor = load_model(model, config) if not Path(model).is_dir() else load_model(model)

    def show(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    stream(predictor, text, show, max_new_tokens=max_tokens)
    sys.stdout.write("\n")
