"""``flywheel data``: ingest, list, show, validate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dataflywheel.cli.options import DEFAULT_CONFIG, ConfigOpt, JsonOpt, console, logger, print_json

app = typer.Typer(help="Dataset versions: ingest, list, show, validate a new batch.", no_args_is_help=True)


@app.command("ingest")
def ingest(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Run the data stages alone (input, schema, processing); reuse an unchanged version."""
    from dataflywheel.api import ingest as ingest_api

    out = console()
    with out.status("reading, checking and processing the data..."):
        version = ingest_api(config, log=logger())
    out.print(f"dataset {version.id}: {version.path}", markup=False)


@app.command("list")
def list_(config: ConfigOpt = DEFAULT_CONFIG, as_json: JsonOpt = False) -> None:
    """Every dataset version, oldest first."""
    from rich.table import Table

    from dataflywheel.data.dataset import list_versions
    from dataflywheel.loop import as_config, open_project

    project = open_project(as_config(config))
    try:
        rows = list_versions(project)
    finally:
        project.close()
    if as_json:
        print_json([{"id": r.id, "created_at": r.created_at.isoformat(), "source": r.source, "rows": r.n_rows,
                     "splits": r.split_sizes} for r in rows])
        return
    table = Table("version", "created", "source", "rows", "train", "valid", "test")
    for r in rows:
        s = r.split_sizes
        table.add_row(r.id, r.created_at.strftime("%Y-%m-%d %H:%M"), r.source, str(r.n_rows),
                      str(s.get("train")), str(s.get("valid")), str(s.get("test")))
    console().print(table)


@app.command("show")
def show(
    version: Annotated[str, typer.Argument(help="Version id (or a unique prefix, or 'latest').")] = "latest",
    config: ConfigOpt = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Schema, statistics, split sizes, processing report and lineage of a dataset version."""
    from rich.table import Table

    from dataflywheel.data.dataset import get_version
    from dataflywheel.loop import as_config, open_project

    project = open_project(as_config(config))
    try:
        v = get_version(project, version)
    finally:
        project.close()
    schema = v.schema()
    if as_json:
        doc = {"id": v.id, "source": v.source, "parents": v.parents, "split_sizes": v.split_sizes,
               "report": v.report, "schema": schema.to_dict()}
        typer.echo(json.dumps(doc, indent=2, default=str, ensure_ascii=False))
        return
    out = console()
    out.print(f"dataset {v.id}  source: {v.source}  parents: {', '.join(v.parents) or '-'}", markup=False)
    out.print(f"splits: {v.split_sizes}", markup=False)
    excluded = v.report.get("excluded") or []
    if excluded:
        out.print(f"excluded (not in the schema): {', '.join(excluded)}", markup=False)
    table = Table("column", "type", "missing", "unique", "min", "max", "mean", "categories")
    for c in schema.columns:
        cats = ", ".join(c.categories[:6]) + (" ..." if len(c.categories) > 6 else "") if c.categories else ""
        name = c.name + (" (target)" if c.name == schema.target else "")
        shown = _date if c.type == "datetime" else _num
        table.add_row(name, c.type, f"{c.missing_rate:.1%}", str(c.n_unique), shown(c.min), shown(c.max),
                      shown(c.mean), cats)
    out.print(table)
    report = {k: val for k, val in v.report.items() if k not in ("split_sizes",)}
    out.print("processing: " + json.dumps(report, default=str, ensure_ascii=False), markup=False, soft_wrap=True)


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.4g}"


def _date(seconds: float | None) -> str:
    """A datetime statistic (epoch seconds, UTC) as an ISO date, with the time unless it is midnight."""
    from datetime import UTC, datetime

    if seconds is None:
        return ""
    when = datetime.fromtimestamp(seconds, tz=UTC).replace(tzinfo=None)
    if when == when.replace(hour=0, minute=0, second=0, microsecond=0):
        return when.date().isoformat()
    return when.isoformat(sep=" ", timespec="seconds")


@app.command("validate")
def validate(
    file: Annotated[Path, typer.Argument(help="A new batch (csv, tsv, jsonl, parquet).")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset version to check against.")] = "latest",
    config: ConfigOpt = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    require_target: Annotated[bool, typer.Option("--require-target", help="The batch must hold the target "
                                                 "column (labelled data for training).")] = False,
    inputs_only: Annotated[bool, typer.Option("--inputs-only", hidden=True,
                                              help="Accepted for compatibility: the target is optional.")] = False,
) -> None:
    """Check a new batch against a dataset version's schema; exit 1 if an anomaly set to 'fail' is found.

    The target column is optional (a batch to be scored) and the excluded columns are expected."""
    from dataflywheel.api import validate_batch

    report = validate_batch(file, config, dataset, require_target=require_target and not inputs_only)
    if as_json:
        print_json(report.to_dict())
    else:
        console().print(report.summary(), markup=False)
    if report.failed:
        raise typer.Exit(1)
