"""``flywheel retrain``, ``flywheel lineage`` and ``flywheel feedback import``: closing the loop.

Wire into the command table with ``app.command("retrain")(retrain)``,
``app.command("lineage")(lineage)`` and ``feedback_app.command("import")(feedback_import)``
(``feedback_app`` below is a ready ``flywheel feedback`` group).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from dataflywheel.cli.options import DEFAULT_CONFIG, ConfigOpt, console, logger, print_json
from dataflywheel.errors import FlywheelError

feedback_app = typer.Typer(help="Feedback on served predictions.", no_args_is_help=True)


class UsageError(FlywheelError):
    """The command line itself is wrong (missing or conflicting arguments)."""


def _project(config: Path) -> Any:
    from dataflywheel.loop import as_config, open_project

    cfg = as_config(config)
    return cfg, open_project(cfg)


def retrain(
    config: ConfigOpt = DEFAULT_CONFIG,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show training progress.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Build the next dataset version from labelled feedback, train a challenger, gate it, promote or reject."""
    from dataflywheel.feedback.retrain import retrain as run_retrain

    cfg, project = _project(config)
    try:
        result = run_retrain(cfg, project, progress=progress, log=_quiet if as_json else logger())
    finally:
        project.close()
    if as_json:
        print_json(result.to_dict())


def _quiet(_msg: str) -> None:
    pass


def lineage(
    prediction_id: Annotated[str | None, typer.Argument(help="A prediction id returned by /v1/predict.")] = None,
    feedback: Annotated[str | None, typer.Option("--feedback", help="Trace a feedback id instead.")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="Print the trace as JSON.")] = False,
) -> None:
    """Trace a prediction (model, run, dataset, parents, feedback) or a feedback row (first model that learned it)."""
    from dataflywheel.lineage_trace import trace_feedback, trace_prediction

    if (prediction_id is None) == (feedback is None):
        raise UsageError("give a PREDICTION_ID or --feedback ID (exactly one)", where="flywheel lineage")
    _cfg, project = _project(config)
    try:
        doc = trace_prediction(project, prediction_id) if prediction_id else trace_feedback(project, feedback or "")
    finally:
        project.close()
    if as_json:
        print_json(doc)
        return
    lines = _prediction_lines(doc) if prediction_id else _feedback_lines(doc)
    out = console()
    for line in lines:
        out.print(line, markup=False, soft_wrap=True)


def _prediction_lines(doc: dict[str, Any]) -> list[str]:
    p = doc["prediction"]
    lines = [f"prediction {p['id']} at {p['created_at']}: {json.dumps(p['output'].get('prediction'))} "
             f"(latency {p['latency_ms']:.2f} ms)"]
    lines += [f"  feedback {f['id']}: {f['kind']} {_value(f['value'])}" for f in doc["feedback"]]
    m = doc["model"]
    if m is None:
        return [*lines, "  model: unknown (not logged)"]
    lines.append(f"-> model v{m['version']} ({m['model_type']}, aliases: {', '.join(m['aliases']) or '-'}; "
                 f"verdict: {m['verdict']})")
    if doc["run"]:
        r = doc["run"]
        lines.append(f"-> run {r['id']} ({r['epochs']} epochs, seed {r['seed']}, code {r['code_version']})")
    lines += _dataset_lines(doc["dataset"], depth=0)
    return lines


def _dataset_lines(node: dict[str, Any], depth: int) -> list[str]:
    pad = "  " * depth
    fb = node.get("feedback") or {}
    counts = ", ".join(f"{role} {len(ids)}" for role, ids in fb.items()) or "none"
    lines = [f"{pad}-> dataset {node['id']}: {node.get('source', '?')} ({node.get('n_rows', '?')} rows; "
             f"feedback rows: {counts})"]
    for parent in node.get("parents", []):
        lines += _dataset_lines(parent, depth + 1)
    return lines


def _feedback_lines(doc: dict[str, Any]) -> list[str]:
    f = doc["feedback"]
    lines = [f"feedback {f['id']} ({f['kind']} {_value(f['value'])}) on prediction {f['prediction_id']}"]
    lines += [f"  in dataset {d['id']} as {d['role']}" for d in doc["datasets"]] or ["  in no dataset version yet"]
    m = doc["first_model"]
    roles = {d["role"] for d in doc["datasets"]}
    if m:
        lines.append(f"first model that learned from it: v{m['version']} ({m['verdict']}; aliases: "
                     f"{', '.join(m['aliases']) or '-'})")
    elif roles and roles <= set(_NOT_LEARNED):
        why = " and ".join(_NOT_LEARNED[r] for r in sorted(roles))
        lines.append(f"first model that learned from it: none: it was {why}")
    else:
        lines.append("first model that learned from it: none yet")
    return lines


_NOT_LEARNED = {"holdout": "held out for evaluation, never trained on",
                "dropped": "dropped (a duplicate or superseded), never trained on",
                "rejected": "rejected (the model cannot use it); the next retrain tries it again"}


def _value(value: Any) -> str:
    """A feedback value as a person reads it: the label itself, not its JSON wrapper."""
    if isinstance(value, dict) and set(value) == {"label"}:
        value = value["label"]
    return json.dumps(value, ensure_ascii=False)


@feedback_app.command("import")
def feedback_import(
    file: Annotated[Path, typer.Argument(help="CSV/TSV/JSONL/JSON/Parquet: prediction_id,label or features + label; "
                                               "completion_id with thumbs, rating, correction, choice, choice_index, "
                                               "comment.")],
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Load offline feedback by prediction (or completion) id, or labels by the record itself (all rows or none)."""
    from dataflywheel.feedback.importer import import_feedback

    cfg, project = _project(config)
    try:
        result = import_feedback(project, file, privacy=cfg.privacy)
    finally:
        project.close()
    console().print(f"{file}: {result.rows} rows matched by {result.matched_by}: {result.created} feedback rows "
                    f"stored, {result.already} already imported", markup=False)
