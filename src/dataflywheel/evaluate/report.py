"""The evaluation report: one self-contained HTML file (inline CSS, PNGs as data URIs).

The page holds a metrics table, learning curves, the task's plots and per-class table
(:meth:`Task.plots`, :meth:`Task.per_class`; binary: ROC, PR, calibration, confusion matrix with
the decision threshold marked; multiclass: confusion matrix and a per-class table; regression:
predicted vs actual and residuals), a lineage table and any extra sections a caller adds.
matplotlib is only imported when a plot is drawn.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dataflywheel.errors import ConfigError
from dataflywheel.evaluate import plots
from dataflywheel.evaluate.metrics import evaluate_predictions, primary_metric

if TYPE_CHECKING:
    import jinja2

    from dataflywheel.tasks import Task

TEMPLATE = "report.html.j2"
_PER_CLASS_COLUMNS = ("precision", "recall", "f1-score", "support")


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("dataflywheel.evaluate", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _fmt(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}" if np.isfinite(value) else None
    return str(value)


def _splits(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{split: metrics}``: a flat metrics dict is one split called "value"."""
    if metrics and all(isinstance(v, dict) for v in metrics.values()):
        return metrics
    return {"value": metrics} if metrics else {}


def _metric_table(splits: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    names: list[str] = []
    for m in splits.values():
        names += [k for k, v in m.items() if k not in names and not isinstance(v, dict | list)]
    return [{"name": n, "cells": [_fmt(m.get(n)) for m in splits.values()]} for n in names]


def _per_class_table(per_class: dict[str, Any] | None) -> dict[str, Any] | None:
    if not per_class:
        return None
    rows = [
        (name, [_fmt(cells.get(c)) for c in _PER_CLASS_COLUMNS])
        for name, cells in per_class.items()
        if isinstance(cells, dict)
    ]
    return {"columns": _PER_CLASS_COLUMNS, "rows": rows}


def _interval_rows(intervals: dict[str, dict[str, Any]] | None) -> list[dict[str, Any]]:
    """One row per metric: the two values, the difference and its interval, signed to 4 decimals."""
    rows = []
    for metric, iv in (intervals or {}).items():
        rows.append({"metric": metric, "ours": f"{iv['ours']:.4f}", "theirs": f"{iv['theirs']:.4f}",
                     "difference": f"{iv['difference']:+.4f}", "low": f"{iv['low']:+.4f}", "high": f"{iv['high']:+.4f}",
                     "excludes_zero": bool(iv["excludes_zero"]), "n": iv["n"],
                     "confidence": f"{iv['confidence'] * 100:g} %"})
    return rows


def _flatten(lineage: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in lineage.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += _flatten(value, name + ".")
        elif isinstance(value, list | tuple | dict):
            out.append((name, json.dumps(value, default=str)))
        else:
            out.append((name, "—" if value is None else str(value)))
    return out


def _task(task: str) -> Task | None:
    """The registered task, or None for an unresolved one such as "auto" (no task sections)."""
    from dataflywheel.tasks import available_tasks, get_task

    return get_task(task) if task in available_tasks() else None


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_report(
    path: Path,
    *,
    title: str,
    task: str,
    metrics: dict[str, Any],
    history: list[dict[str, Any]] | None,
    y_true: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    class_names: list[str] | None = None,
    lineage: dict[str, Any] | None = None,
    sections: Sequence[tuple[str, str]] = (),
    champion_answers: dict[str, str] | None = None,
    champion_version: int | None = None,
    differences: Sequence[dict[str, Any]] = (),
    base_metrics: dict[str, Any] | None = None,
    intervals: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Write the HTML report to ``path`` atomically and return ``path``.

    ``metrics`` is one metrics dict (from :func:`evaluate_predictions`) or ``{split: dict}``
    (one table column per split; the last split's threshold and confusion matrix are used).
    ``scores`` are p_pos (binary), (n, k) proba (multiclass) or predictions (regression) for
    ``y_true``; without them only learning curves and the confusion matrix from ``metrics`` are
    drawn. ``history`` is one dict per epoch (loss, val_loss, val_<metric>, optional epoch).
    ``sections`` are extra (heading, trusted HTML) blocks appended at the end.
    ``champion_answers`` (prompt -> answer, a generation champion's on the same prompts) add the
    champion's column to the sample answers; ``differences`` (the gate's prompts where the two
    models' answers differ most) a table of them. ``base_metrics`` (a first version's base model on the
    same rows) add a base column to the metrics and the sample answers. ``intervals`` (metric ->
    :meth:`~dataflywheel.evaluate.bootstrap.Interval.to_dict`, against the champion, else the base)
    are a table of their own.
    """
    path = Path(path)
    splits = _splits(metrics)
    last = next(reversed(splits.values()), {})
    beside = None
    if champion_answers:
        beside = f"champion v{champion_version}" if champion_version is not None else "champion"
    elif base_metrics:
        beside = "base model"
        champion_answers = {str(a["prompt"]): str(a["answer"]) for a in base_metrics.get("answer_samples") or []}
    table = splits
    if base_metrics:
        table = {("this model" if name == "value" else name): m for name, m in splits.items()}
        table["base model"] = base_metrics
    kind = _task(task)
    threshold = float(last.get("threshold", 0.5)) if kind is not None and kind.uses_threshold else None
    reference = last
    if y_true is not None and scores is not None:
        reference = evaluate_predictions(
            task, y_true, scores, class_names=class_names, threshold=threshold or 0.5
        )
    try:
        primary = primary_metric(task)[0]
    except ConfigError:  # an unresolved task such as "auto": no row is highlighted
        primary = None

    groups = []
    curves = plots.learning_curves(history) if history else None
    if curves:
        groups.append(
            {"heading": "Learning curves", "plots": [{"src": curves, "caption": "Per epoch"}]}
        )
    found, notes = kind.plots(reference, y_true, scores, class_names, threshold or 0.5) if kind else ([], [])
    if found:
        split = next(reversed(splits), "value")
        heading = "Evaluation plots" + ("" if split == "value" else f" ({split})")
        groups.append({"heading": heading, "plots": found})

    html = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title=title,
            task=task,
            threshold=threshold,
            generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            metric_columns=list(table),
            metric_rows=_metric_table(table),
            primary=primary,
            per_class=_per_class_table(kind.per_class(reference)) if kind else None,
            samples=[{**a, "champion": (champion_answers or {}).get(str(a["prompt"]))}
                     for a in last.get("answer_samples") or []],
            champion_version=champion_version if champion_answers else None,
            differences=list(differences),
            champion_version_any=champion_version,
            beside=beside,
            intervals=_interval_rows(intervals) if beside else [],
            plot_groups=groups,
            notes=notes,
            lineage=_flatten(lineage) if lineage else [],
            sections=list(sections),
        )
    )
    _write_atomic(path, html)
    return path
