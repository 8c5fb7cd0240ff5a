"""Feedback labels checked by the task of the model that made the prediction.

A label must be an answer the predicting model could have given: one of its classes for a
classifier, a number for a regression model (:meth:`~dataflywheel.tasks.Task.check_label`). The
task is the one registered for the prediction's model version (:class:`LabelChecker` reads it
from the model registry, once per version); a prediction without a version (a bundle served from
a folder) is read by the logged answer itself: with class probabilities, by a task with classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from dataflywheel.store.metadata import ModelVersionRow
from dataflywheel.tasks import Task, get_task, task_for_answers

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from dataflywheel.feedback.log import PredictionRow
    from dataflywheel.store.metadata import MetadataStore


def check_label(prediction: PredictionRow, label: Any, task: Task | None = None) -> Any:
    """``label`` as stored for ``prediction``, checked by ``task`` (None: the task the logged
    answer implies); a :class:`~dataflywheel.errors.LabelError` naming the label otherwise."""
    probabilities = (prediction.output or {}).get("probabilities")
    classes = None if probabilities is None else [str(c) for c in probabilities]
    if task is None:
        task = task_for_answers(has_classes=classes is not None)
    return task.check_label(label, classes)


class LabelChecker:
    """``checker(prediction, label)``: :func:`check_label` with the task of the prediction's
    model version, looked up in ``metadata`` (or in ``session``'s transaction when given) and
    remembered (a version's task never changes)."""

    def __init__(self, metadata: MetadataStore | None = None) -> None:
        self.metadata = metadata
        self.tasks: dict[int, str] = {}

    def task_of(self, version: int | None, session: Session | None = None) -> Task | None:
        if version is None:
            return None
        if version not in self.tasks:
            query = select(ModelVersionRow.task).where(ModelVersionRow.version == version)
            if session is not None:
                name = session.scalar(query)
            elif self.metadata is not None:
                with self.metadata.transaction() as s:
                    name = s.scalar(query)
            else:
                return None
            if name is None:
                return None
            self.tasks[version] = name
        return get_task(self.tasks[version])

    def __call__(self, prediction: PredictionRow, label: Any, session: Session | None = None) -> Any:
        return check_label(prediction, label, self.task_of(prediction.model_version, session))
