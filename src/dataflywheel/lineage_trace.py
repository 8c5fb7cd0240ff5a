"""Lineage end to end, in both directions.

:func:`trace_prediction`: a served prediction -> the model version that made it -> its training
run -> its dataset version -> the parent versions (recursively), each with the feedback rows
it added. :func:`trace_feedback`: a feedback row -> its prediction, the dataset versions that
hold it (and in which role) -> the first model version that learned from it.
Both return plain JSON-safe dicts (``flywheel lineage --json`` prints them as they are).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from dataflywheel.errors import NotFoundError
from dataflywheel.feedback.log import FeedbackRow, PredictionRow
from dataflywheel.store import Project
from dataflywheel.store.metadata import DatasetFeedbackRow, DatasetParentRow, DatasetRow, ModelVersionRow, RunRow

LEARNED_ROLES = ("train", "valid")
"""Roles in which a model learns from a feedback row (``holdout`` rows only evaluate it)."""


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def _prediction(row: PredictionRow) -> dict[str, Any]:
    return {"id": row.id, "created_at": _iso(row.created_at), "model_version": row.model_version,
            "input": row.input, "output": row.output, "latency_ms": row.latency_ms}


def _feedback(row: FeedbackRow) -> dict[str, Any]:
    return {"id": row.id, "prediction_id": row.prediction_id, "created_at": _iso(row.created_at), "kind": row.kind,
            "value": row.value}


def _aliases(project: Project, version: int) -> list[str]:
    from dataflywheel.registry.versions import aliases_of

    return aliases_of(project).get(version, [])


def _model(project: Project, row: ModelVersionRow) -> dict[str, Any]:
    return {"version": row.version, "created_at": _iso(row.created_at), "model_type": row.model_type,
            "task": row.task, "aliases": _aliases(project, row.version), "dataset_id": row.dataset_id,
            "verdict": (row.verdict or {}).get("decision"), "reasons": (row.verdict or {}).get("reasons", [])}


def dataset_node(project: Project, dataset_id: str, _seen: set[str] | None = None) -> dict[str, Any]:
    """A dataset version with its feedback rows by role and its parents, recursively."""
    seen = _seen if _seen is not None else set()
    seen.add(dataset_id)
    with project.metadata.transaction() as s:
        row = s.get(DatasetRow, dataset_id)
        if row is None:
            return {"id": dataset_id, "missing": True, "parents": []}
        links = s.execute(select(DatasetFeedbackRow.feedback_id, DatasetFeedbackRow.role)
                          .where(DatasetFeedbackRow.dataset_id == dataset_id)
                          .order_by(DatasetFeedbackRow.role, DatasetFeedbackRow.feedback_id)).all()
        parents = list(s.scalars(select(DatasetParentRow.parent_id).where(DatasetParentRow.child_id == dataset_id)))
    feedback: dict[str, list[str]] = {}
    for fid, role in links:
        feedback.setdefault(role, []).append(fid)
    return {"id": row.id, "created_at": _iso(row.created_at), "source": row.source, "n_rows": row.n_rows,
            "split_sizes": row.split_sizes, "feedback": feedback,
            "parents": [dataset_node(project, p, seen) for p in parents if p not in seen]}


def trace_prediction(project: Project, prediction_id: str) -> dict[str, Any]:
    """Prediction -> model version -> training run -> dataset version -> parents, plus the
    feedback received on this prediction. Unknown id: :class:`NotFoundError`."""
    with project.metadata.transaction() as s:
        pred = s.get(PredictionRow, prediction_id)
        if pred is None:
            raise NotFoundError(f"no prediction {prediction_id!r}", where="prediction_id",
                                fix="use a prediction_id returned by /v1/predict")
        received = list(s.scalars(select(FeedbackRow).where(FeedbackRow.prediction_id == prediction_id)
                                  .order_by(FeedbackRow.created_at)))
        mv = s.get(ModelVersionRow, pred.model_version) if pred.model_version is not None else None
        run = s.get(RunRow, mv.run_id) if mv is not None else None
    doc: dict[str, Any] = {"prediction": _prediction(pred), "feedback": [_feedback(f) for f in received],
                           "model": None, "run": None, "dataset": None}
    if mv is None:
        return doc
    doc["model"] = _model(project, mv)
    if run is not None:
        lin = run.lineage or {}
        doc["run"] = {"id": run.id, "run_key": run.run_key, "created_at": _iso(run.created_at),
                      "config_hash": lin.get("config_hash"), "code_version": lin.get("code_version"),
                      "seed": lin.get("seed"), "epochs": len(run.history or [])}
    doc["dataset"] = dataset_node(project, mv.dataset_id)
    return doc


def _descendants(project: Project, roots: list[str]) -> set[str]:
    found, todo = set(roots), list(roots)
    with project.metadata.transaction() as s:
        while todo:
            q = select(DatasetParentRow.child_id).where(DatasetParentRow.parent_id.in_(todo))
            todo = [c for c in set(s.scalars(q)) if c not in found]
            found.update(todo)
    return found


def trace_feedback(project: Project, feedback_id: str) -> dict[str, Any]:
    """Feedback -> prediction, the dataset versions holding it (with role), and ``first_model``:
    the lowest model version trained on a dataset that includes it in train or valid, directly
    or through an ancestor (None if none yet). Unknown id: :class:`NotFoundError`."""
    with project.metadata.transaction() as s:
        fb = s.get(FeedbackRow, feedback_id)
        if fb is None:
            raise NotFoundError(f"no feedback {feedback_id!r}", where="feedback id",
                                fix="use a feedback_id returned by /v1/feedback or `flywheel feedback import`")
        pred = s.get(PredictionRow, fb.prediction_id)
        links = s.execute(select(DatasetFeedbackRow.dataset_id, DatasetFeedbackRow.role)
                          .where(DatasetFeedbackRow.feedback_id == feedback_id)).all()
    learned = [d for d, role in links if role in LEARNED_ROLES]
    first = None
    if learned:
        datasets = _descendants(project, learned)
        with project.metadata.transaction() as s:
            row = s.scalars(select(ModelVersionRow).where(ModelVersionRow.dataset_id.in_(datasets))
                            .order_by(ModelVersionRow.version).limit(1)).first()
        first = _model(project, row) if row is not None else None
    return {"feedback": _feedback(fb), "prediction": _prediction(pred) if pred is not None else None,
            "datasets": [{"id": d, "role": role} for d, role in sorted(links)], "first_model": first}
