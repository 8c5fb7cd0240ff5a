"""``flywheel explain``: per-record attributions (Integrated Gradients) from a model bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from dataflywheel.cli.options import DEFAULT_CONFIG, ConfigOpt, console

TOP = 5
"""Attributions printed per record (largest absolute value first); --json prints all of them."""


def explain(
    input: Annotated[Path, typer.Argument(help="Records to explain (csv, tsv, jsonl, parquet).")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Alias, version (3 or v3) or a bundle folder.")
    ] = "champion",
    config: ConfigOpt = DEFAULT_CONFIG,
    steps: Annotated[int, typer.Option("--steps", help="Integration steps (more: slower, closer to exact).")] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="Print every attribution as JSON.")] = False,
) -> None:
    """Why the model predicts what it does: per-token (text) or per-feature attributions per record."""
    from dataflywheel.api import load_model
    from dataflywheel.data.sources import source_from_path
    from dataflywheel.explain import explain_records
    from dataflywheel.runtime import set_threads

    predictor = load_model(model) if Path(model).is_dir() else load_model(model, config)
    set_threads(None, sum(p.numel() for p in predictor.model.parameters()))
    records = source_from_path(input).read().to_dicts()
    explanations = explain_records(predictor, records, steps=steps)
    if as_json:
        typer.echo(json.dumps(explanations, indent=2, ensure_ascii=False, allow_nan=False))
        return
    out = console()
    for i, e in enumerate(explanations):
        for line in _lines(i, e):
            out.print(line, markup=False)


def _lines(i: int, e: dict[str, Any]) -> list[str]:
    of = f" of {e['target_class']}" if e.get("target_class") is not None else ""
    head = (f"record {i}: prediction {e['prediction']} ({e['explained']}{of} {_f(e['output'])}, "
            f"baseline {_f(e['baseline_output'])}, delta {_f(e['convergence_delta'])})")
    top = sorted(e["attributions"], key=lambda a: -abs(a["attribution"] or 0.0))[:TOP]
    rows = []
    columns = {a.get("column") for a in e["attributions"] if "token" in a}
    for a in top:
        if "token" in a:  # with several text columns, say whose token it is
            name = f"token {a['token']!r}" + (f" in {a['column']}" if len(columns) > 1 else "")
        else:
            name = f"{a['feature']} = {a['value']}"
        rows.append(f"  {_f(a['attribution'], signed=True)}  {name}")
    return [head, *rows]


def _f(x: float | None, signed: bool = False) -> str:
    return "n/a" if x is None else (f"{x:+.4f}" if signed else f"{x:.4f}")
