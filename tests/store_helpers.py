"""Reads of the store that several tests assert on."""

from __future__ import annotations

from pathlib import Path

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


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "breast-cancer" / "flywheel.yaml"
"""The breast-cancer example's flywheel.yaml, which many tests train a small champion from."""


def trained_example(folder: Path, epochs: int = 2) -> Path:
    """``folder`` with the breast-cancer example trained for ``epochs`` epochs: v1 is the champion."""
    from dataflywheel.loop import run

    (folder / "flywheel.yaml").write_text(EXAMPLE.read_text().replace("epochs: 50", f"epochs: {epochs}"))
    assert run(folder / "flywheel.yaml", progress=False).version == 1
    return folder
