"""Monitoring a served model: input drift against its training data, and live accuracy.

:func:`monitor_report` compares the train split of the dataset version a model was trained on
with the inputs of the last ``window`` logged predictions (``predictions`` table), feature by
feature (see :mod:`dataflywheel.feedback.drift`; a text input through the model's tokenizer:
length, unknown-token share and truncation rate, :mod:`dataflywheel.feedback.text_drift`), and
scores the predictions that received a label through ``feedback``. The report is plain JSON
(no NaN): ``flywheel monitor`` prints it, ``GET /v1/monitor`` returns it, and the retrain
trigger reads ``max_psi``.

Recent inputs are taken from predictions of *any* model version: drift is a property of the
traffic, not of the model that answered it. Reference statistics depend only on the dataset
version (a content hash), the features, the bin count and, for text, the tokenizer and
``max_length``, so they are computed once per process and cached.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy import select

from dataflywheel.feedback.drift import (
    SIGNIFICANT,
    CategoryReference,
    NumericReference,
    category_drift,
    category_reference,
    numeric_drift,
    numeric_reference,
)
from dataflywheel.feedback.log import FeedbackRow, PredictionRow
from dataflywheel.feedback.text_drift import TextReference, text_drift, text_reference
from dataflywheel.store import Project

NUMERIC_TYPES = ("number",)
CATEGORY_TYPES = ("category", "binary")
TEXT_TYPES = ("text",)
"""Feature types monitored (text: when the model tokenises it); datetime features are listed
as skipped."""
CACHE_SIZE = 16


@dataclass(frozen=True)
class Reference:
    dataset_id: str
    n_rows: int
    features: dict[str, tuple[str, NumericReference | CategoryReference | TextReference]]
    """feature -> (schema type, summary)."""


_cache: OrderedDict[tuple[Any, ...], Reference] = OrderedDict()
_cache_lock = threading.Lock()


def reference_for(project: Project, dataset_id: str, features: dict[str, str], bins: int,
                  text_encoders: Mapping[str, Any] | None = None) -> Reference:
    """Summaries of the train split of ``dataset_id`` for ``features`` (name -> type), cached;
    a text feature needs its fitted encoder in ``text_encoders``."""
    encoders = dict(text_encoders or {})
    tokenizers = tuple(sorted((name, _fingerprint(enc)) for name, enc in encoders.items()))
    key = (dataset_id, bins, tuple(sorted(features.items())), tokenizers)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    from dataflywheel.data.dataset import get_version

    train = get_version(project, dataset_id).split("train")
    summaries: dict[str, tuple[str, NumericReference | CategoryReference | TextReference]] = {}
    for name, ftype in features.items():
        if name not in train.columns:
            continue
        col = train.get_column(name)
        if ftype in NUMERIC_TYPES:
            summaries[name] = (ftype, numeric_reference(col, bins))
        elif ftype in CATEGORY_TYPES:
            summaries[name] = (ftype, category_reference(col))
        elif ftype in TEXT_TYPES and name in encoders:
            summaries[name] = (ftype, text_reference(encoders[name], col, bins))
    ref = Reference(dataset_id, train.height, summaries)
    with _cache_lock:
        _cache[key] = ref
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return ref


def _fingerprint(encoder: Any) -> str:
    digest = hashlib.sha256(str(encoder.tokenizer_json_).encode("utf-8")).hexdigest()
    return f"{digest}:{encoder.max_length}"


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def model_dataset_id(project: Project, predictor: Any) -> str:
    """The dataset version the predictor's model was trained on (registry row, else its bundle)."""
    if predictor.version is not None:
        from dataflywheel.registry.versions import resolve

        return resolve(project, predictor.version).dataset_id
    from dataflywheel.registry.bundle import read_json

    return str(read_json(predictor.folder, "lineage.json")["dataset_id"])


def recent_inputs(project: Project, window: int, features: dict[str, str]) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Inputs of the last ``window`` logged predictions as a frame with one column per feature
    (numbers Float64, others String; absent keys are null), plus the window's time span."""
    with project.metadata.transaction() as s:
        rows = s.execute(
            select(PredictionRow.input, PredictionRow.created_at)
            .order_by(PredictionRow.created_at.desc())
            .limit(window)
        ).all()
    span = {"from": rows[-1][1].isoformat() if rows else None, "to": rows[0][1].isoformat() if rows else None}
    inputs = [r[0] if isinstance(r[0], dict) else {} for r in rows]
    columns: dict[str, list[Any]] = {name: [i.get(name) for i in inputs] for name in features}
    frame = pl.DataFrame(
        {name: pl.Series(name, _typed(vals, features[name]), dtype=_dtype(features[name]), strict=False)
         for name, vals in columns.items()} or None,  # no columns: still the window's height
        height=len(rows),
    )
    return frame, span


def _dtype(ftype: str) -> pl.DataType:
    return pl.Float64() if ftype in NUMERIC_TYPES else pl.String()


def _typed(values: list[Any], ftype: str) -> list[Any]:
    if ftype in NUMERIC_TYPES:
        return [v if isinstance(v, (int, float)) and not isinstance(v, bool) else None for v in values]
    return [None if v is None else _category(v) for v in values]


def _category(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def live_accuracy(project: Project, task: str) -> dict[str, Any]:
    """The task's live metric (:attr:`Task.live_metric`: accuracy for classification, MAE for
    regression) of logged predictions against their labelled feedback, overall and per model
    version. A prediction labelled more than once counts once, with its latest label."""
    from dataflywheel.tasks import get_task

    kind = get_task(task)
    metric = kind.live_metric
    with project.metadata.transaction() as s:
        rows = s.execute(
            select(FeedbackRow.prediction_id, FeedbackRow.created_at, FeedbackRow.value, PredictionRow.model_version,
                   PredictionRow.output)
            .join(PredictionRow, PredictionRow.id == FeedbackRow.prediction_id)
            .where(FeedbackRow.kind == "label")
            .order_by(FeedbackRow.created_at)
        ).all()
    latest: dict[str, tuple[int | None, Any, Any]] = {}
    for pid, _at, value, version, output in rows:
        label = (value or {}).get("label")
        predicted = (output or {}).get("prediction")
        if label is not None and predicted is not None:
            latest[pid] = (version, predicted, label)
    versions = np.array([-1 if v is None else v for v, _p, _l in latest.values()], dtype=np.int64)
    scores = np.array([kind.live_score(p, lab) for _v, p, lab in latest.values()], dtype=np.float64)
    by_version = []
    for v in np.unique(versions):
        sel = scores[versions == v]
        by_version.append({"model_version": None if v < 0 else int(v), "n": int(sel.size),
                           metric: float(sel.mean())})
    overall = {"n": int(scores.size), metric: float(scores.mean()) if scores.size else None}
    return {"metric": metric, "overall": overall, "by_version": by_version}


def monitor_report(project: Project, predictor: Any, window: int, bins: int) -> dict[str, Any]:
    """Drift of the last ``window`` served inputs against the model's training data, per feature,
    and live accuracy on labelled feedback. JSON-safe; ``features`` is in schema order, each with
    psi, level (none/moderate/significant), drifted (psi > 0.2), ks_statistic and ks_pvalue
    (numbers and text lengths), n_reference, n_recent, missing_recent, unseen_share (categories),
    psi_of and text (text: length, unknown-token share, truncation rate; see
    :func:`~dataflywheel.feedback.text_drift.text_drift`)."""
    from dataflywheel.serve.schemas import served_columns

    schema = predictor.schema
    types = {name: schema.column(name).type for name in served_columns(predictor)}
    encoders = getattr(getattr(predictor, "preprocessor", None), "__dict__", {}).get("text_encoders_", {})
    monitored = {n: t for n, t in types.items()
                 if t in NUMERIC_TYPES + CATEGORY_TYPES or (t in TEXT_TYPES and n in encoders)}
    dataset_id = model_dataset_id(project, predictor)
    ref = reference_for(project, dataset_id, monitored, bins, {n: encoders[n] for n in monitored if n in encoders})
    recent, span = recent_inputs(project, window, monitored)

    features = []
    for name, ftype in types.items():
        entry: dict[str, Any] = {"feature": name, "type": ftype}
        if name not in ref.features:
            features.append(entry | {"skipped": "not monitored (type or not in the train split)"})
            continue
        _t, summary = ref.features[name]
        column = recent.get_column(name)
        if isinstance(summary, TextReference):
            features.append(entry | text_drift(summary, encoders[name], column))
            continue
        drift = numeric_drift(summary, column) if isinstance(summary, NumericReference) else category_drift(
            summary, column)
        features.append(entry | drift.to_dict())
    psis = [f["psi"] for f in features if f.get("psi") is not None]
    return {
        "model_version": predictor.version,
        "task": predictor.task,
        "dataset_id": dataset_id,
        "window": window,
        "bins": bins,
        "n_reference": ref.n_rows,
        "n_recent": recent.height,
        "recent_span": span,
        "threshold": SIGNIFICANT,
        "max_psi": max(psis) if psis else None,
        "drifted": [f["feature"] for f in features if f.get("drifted")],
        "features": features,
        "live": live_accuracy(project, predictor.task),
    }
