"""Project-level commands: init, validate, run, train, predict."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dataflywheel.cli.options import DEFAULT_CONFIG, ConfigOpt, JsonOpt, console, logger, print_json

if TYPE_CHECKING:
    from dataflywheel.loop import RunResult


def init(
    data: Annotated[Path, typer.Option(
        "--data", help="A data file or folder (csv, tsv, jsonl, parquet) or sklearn:NAME.")],
    target: Annotated[str | None, typer.Option("--target", help="The column to predict (chat data: none).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the config.")] = DEFAULT_CONFIG,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    max_columns: Annotated[int | None, typer.Option("--max-columns", min=1, help="Most columns the data may have "
                                                    "(data.source.max_columns, default 200000).")] = None,
) -> None:
    """Write a starter flywheel.yaml with the feature types inferred from the data."""
    from dataflywheel.scaffold import write_starter

    path, notes = write_starter(str(data), target, output, force=force, max_columns=max_columns)
    out = console()
    for note in notes:
        out.print(note, markup=False)
    out.print(f"wrote {path}: review the inferred feature types, then `flywheel run`", markup=False)


def validate(config: ConfigOpt = DEFAULT_CONFIG, as_json: JsonOpt = False) -> None:
    """Check a flywheel.yaml: unknown keys, types and ranges, with the YAML path of each error;
    then read its data and check that the model has at least one input column."""
    from dataflywheel.config import check_model_params, load_config
    from dataflywheel.features.inputs import config_columns

    cfg = load_config(config)
    check_model_params(cfg, where=str(config))
    inputs, skipped = config_columns(cfg)
    if as_json:
        print_json({"config": str(config), "valid": True, "source": cfg.data.source.type,
                    "target": cfg.data.target, "model": cfg.model.type, "inputs": inputs,
                    "skipped_text": skipped})
        return
    shown = ", ".join(inputs[:8]) + (f", ... ({len(inputs)} columns)" if len(inputs) > 8 else "")
    out = console()
    out.print(f"{config}: valid (source {cfg.data.source.type}, target {cfg.data.target!r}, "
              f"model {cfg.model.type}; inputs: {shown})", markup=False)
    if skipped:
        out.print(f"note: the {cfg.model.type} model reads no text: {', '.join(skipped)} "
                  f"{'are' if len(skipped) > 1 else 'is'} not an input (model.type: transformer reads text "
                  "beside the other columns)", markup=False)


def run(
    config: ConfigOpt = DEFAULT_CONFIG,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a live progress bar.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (progress and "
                                          "messages go to stderr).")] = False,
) -> None:
    """Turn the loop: ingest, process, train, evaluate, register (skipping unchanged stages)."""
    from dataflywheel.loop import run as run_loop

    result = run_loop(config, progress=progress and not as_json, log=logger(stderr=as_json))
    _summary(result, as_json)


def train(
    config: ConfigOpt = DEFAULT_CONFIG,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint of this run.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Train even if an identical run exists.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Train, evaluate and register a model on the current dataset version."""
    from dataflywheel.api import train as train_api

    result = train_api(config, resume=resume, force=force, progress=progress and not as_json,
                       log=logger(stderr=as_json))
    _summary(result, as_json)


def predict(
    input: Annotated[Path, typer.Argument(help="Records to score (csv, tsv, jsonl, parquet).")],
    model: Annotated[str, typer.Option(
        "--model", "-m", help="Alias, version (3 or v3) or a bundle folder.")] = "champion",
    config: ConfigOpt = DEFAULT_CONFIG,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output file; default stdout.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or jsonl (default: csv, or the output's extension).")] = "",
    keep: Annotated[list[str] | None, typer.Option("--keep", "-k", help="Input column to copy to the output "
                                                   "(e.g. an id), repeatable.")] = None,
) -> None:
    """Batch prediction from a model bundle alone: writes prediction and class probabilities (a
    generation model: a completion per prompt, from a prompt column or chat messages)."""
    import polars as pl

    from dataflywheel.api import load_model
    from dataflywheel.data.sources import source_from_path
    from dataflywheel.errors import FlywheelError

    predictor = load_model(model, config) if not Path(model).is_dir() else load_model(model)
    frame = source_from_path(input).read()
    keep = list(dict.fromkeys(keep or []))
    absent = [c for c in keep if c not in frame.columns]
    if absent:
        raise FlywheelError(f"no column named {absent[0]!r} in the input", where=f"{input} (--keep)",
                            fix=f"use one of: {', '.join(frame.columns[:8])}{', ...' if frame.width > 8 else ''}")
    from dataflywheel.tasks import get_task

    generation = get_task(predictor.task).serving == "generation"
    if generation:  # prompts in, completions out
        from dataflywheel.registry.generation import generate_frame

        with console(stderr=True).status(f"generating {len(frame)} answers..."):
            out = generate_frame(predictor, frame)
        result = None
    else:
        result = predictor.predict(frame)
        out = _rounded(result.to_frame())
    if keep:
        clash = [c for c in keep if c in out.columns]
        kept = frame.select(keep).rename({c: f"input_{c}" for c in clash})
        out = pl.concat([kept, out], how="horizontal")
    kind = fmt or (output.suffix.lstrip(".") if output else "csv")
    if kind not in ("csv", "jsonl"):
        raise FlywheelError(f"unsupported output format {kind!r}", where="--format", fix="use csv or jsonl")
    text = out.write_csv() if kind == "csv" else out.write_ndjson()
    if output is None:
        sys.stdout.write(text)
    else:
        from dataflywheel.store.artifacts import atomic_write_text

        atomic_write_text(output, text)
    if result is None:
        console(stderr=True).print(f"{len(out)} prompts answered with model {predictor.version or model}",
                                   markup=False)
        return
    unknown = {k: v for k, v in result.unknown.items() if v}
    coerced = {k: v for k, v in getattr(result, "coerced", {}).items() if v}
    note = f"{len(out)} rows predicted with model {predictor.version or model}"
    if unknown:
        note += "; unseen categories (scored as unknown): " + ", ".join(f"{k}={v}" for k, v in unknown.items())
    if coerced:
        note += "; unreadable values (scored as missing): " + ", ".join(f"{k}={v}" for k, v in coerced.items())
    if result.redacted:
        note += "; PII redacted before scoring: " + ", ".join(f"{k}={v}" for k, v in result.redacted.items())
    console(stderr=True).print(note, markup=False)


def _rounded(frame: Any) -> Any:
    """Float columns to six significant digits (a price 751967.3398991233 prints as 751967)."""
    import polars as pl

    from dataflywheel.evaluate.metrics import round_significant

    floats = [c for c, t in frame.schema.items() if t.is_float()]
    return frame.with_columns(pl.Series(c, round_significant(frame[c].to_numpy()), dtype=pl.Float64) for c in floats)


def _summary(result: RunResult, as_json: bool = False) -> None:
    if as_json:
        from dataclasses import asdict

        print_json(asdict(result))
        return
    out = console()
    verdict = (result.verdict or {}).get("decision", "-")
    out.print(
        f"dataset {result.dataset_id} ({'reused' if result.dataset_reused else 'new'}) -> model v{result.version} "
        f"({'trained' if result.trained else 'unchanged'}; {verdict}); champion: v{result.champion}",
        markup=False,
    )
    if result.report:
        out.print(f"report: {result.report}", markup=False)


def serve(
    config: ConfigOpt = DEFAULT_CONFIG,
    alias: Annotated[str, typer.Option("--alias", "-a", help="Serve the model under this alias.")] = "champion",
    host: Annotated[str | None, typer.Option("--host", help="Default: serve.host (127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Default: serve.port (8000).")] = None,
    auto_retrain: Annotated[bool, typer.Option(
        "--auto-retrain", help="Run the retrain worker beside the server.")] = False,
) -> None:
    """Serve a model over HTTP: /v1/predict (micro-batched, every prediction logged), /v1/feedback; a
    generation model: the OpenAI-compatible /v1/chat/completions and /v1/completions (continuously batched)."""
    from dataflywheel.serve import serve as serve_app

    serve_app(config, alias=alias, host=host, port=port, auto_retrain=auto_retrain)


def demo(
    folder: Annotated[Path, typer.Option("--folder", help="Where to create the demo project.")] = Path("flywheel-demo"),
    initial: Annotated[int, typer.Option("--initial", help="Rows v1 is trained on.")] = 120,
    label_share: Annotated[float, typer.Option("--label-share", help="Share of traffic that gets a true label.")] = 0.6,
) -> None:
    """One turn of the loop on breast cancer: train v1, serve, traffic + feedback, retrain, gate, hot swap."""
    from dataflywheel.demo import print_summary, run_demo

    out = console()
    result = run_demo(folder, initial=initial, label_share=label_share, log=logger())
    print_summary(result, out)
