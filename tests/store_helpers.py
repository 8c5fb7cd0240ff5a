"""Reads of the store that several tests assert on."""

from __future__ import annotations

from sqlalchemy import select

from dataflywheel.store import Project
from dataflywheel.store.metadata import DatasetFeedbackRow


def roles(project: Project, dataset_id: str) -> dict[str, set[str]]:
    """The feedback ids a dataset version links, by role (train, valid, holdout, dropped, ...)."""
    with project.metadata.transaction() as s:
        rows = s.execute(select(DatasetFeedbackRow.feedback_id, DatasetFeedbackRow.role)
                         .where(DatasetFeedbackRow.dataset_id == dataset_id)).all()
    out: dict[str, set[str]] = {}
    for fid, role in rows:
        out.setdefault(role, set()).add(fid)
    return out
