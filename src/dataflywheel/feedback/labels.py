"""Feedback checked by the task of the model that made the prediction.

A label must be an answer the predicting model could have given: one of its classes for a
classifier, a number for a regression model (:meth:`~dataflywheel.tasks.Task.check_label`).
Feedback given as a dict of fields (a label with a comment, or any kind of feedback on a
completion: :mod:`~dataflywheel.feedback.completion_feedback`) is checked by
:meth:`~dataflywheel.tasks.Task.check_feedback`, which returns the whole stored value.

The task is the one registered for the prediction's model version (:class:`FeedbackChecker`
reads it from the model registry, once per version); a prediction without a version (a bundle or
model folder served as it is) is read by the logged answer itself: a completion response (its
``choices``) by the generation task, an answer with class probabilities by a task with classes,
any other by a task without them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from dataflywheel.errors import LabelError
from dataflywheel.feedback.completion_feedback import (
    COMPLETION_KINDS,
    feedback_kind,
    is_completion,
    lazy_text_redactor,
    redact_text,
)
from dataflywheel.store.metadata import ModelVersionRow
from dataflywheel.tasks import Task, get_task, task_for_answers

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from dataflywheel.feedback.log import PredictionRow
    from dataflywheel.privacy import Redactor
    from dataflywheel.store.metadata import MetadataStore

__all__ = ["FeedbackChecker", "LabelChecker", "answer_task", "check_answer_feedback", "check_feedback",
           "check_label"]


def answer_task(output: Mapping[str, Any] | None) -> Task:
    """The task a logged answer implies when its model version names none (module docstring)."""
    if is_completion(output):
        return task_for_answers(has_classes=False, serving="generation")
    return task_for_answers(has_classes=(output or {}).get("probabilities") is not None)


def _classes(prediction: Any) -> list[str] | None:
    probabilities = (prediction.output or {}).get("probabilities")
    return None if probabilities is None else [str(c) for c in probabilities]


def check_label(prediction: PredictionRow, label: Any, task: Task | None = None) -> Any:
    """``label`` as stored for ``prediction``, checked by ``task`` (None: the task the logged
    answer implies); a :class:`~dataflywheel.errors.LabelError` naming the label otherwise."""
    return (task or answer_task(prediction.output)).check_label(label, _classes(prediction))


def check_feedback(prediction: Any, value: Mapping[str, Any], task: Task | None = None,
                   redactor: Redactor | None = None) -> dict[str, Any]:
    """The stored value of feedback given as fields (``value``) on ``prediction``: its kind
    (:func:`~dataflywheel.feedback.completion_feedback.feedback_kind`) checked by ``task``'s
    :meth:`~dataflywheel.tasks.Task.check_feedback` (None: the task the answer implies)."""
    task = task or answer_task(prediction.output)
    return task.check_feedback(feedback_kind(value), value, prediction, redactor=redactor)


def check_answer_feedback(task: Task, kind: str, value: Mapping[str, Any], prediction: Any,
                          redactor: Redactor | None) -> dict[str, Any]:
    """The default :meth:`~dataflywheel.tasks.Task.check_feedback`, for tasks that answer
    records: ``label`` (checked by :meth:`~dataflywheel.tasks.Task.check_label`, with an
    optional redacted ``comment``) or ``comment`` alone; a completion's kinds are refused."""
    if kind in COMPLETION_KINDS and kind != "comment":
        raise LabelError(f"{kind} is feedback on a generated completion; this prediction is a {task.name} "
                         "model's answer", where=kind, fix="send its true label (and a comment if you like)")
    if value.get("choice_index") is not None:
        raise LabelError(f"choice_index names one choice of a completion; a {task.name} prediction has none",
                         where="choice_index", fix="leave choice_index out")
    stored: dict[str, Any] = {}
    if kind == "label":
        stored["label"] = task.check_label(value.get("label"), _classes(prediction))
    if value.get("comment") is not None:
        stored["comment"] = redact_text(value["comment"], "comment", redactor)
    return stored


class FeedbackChecker:
    """``checker(prediction, value)``: the check the log writer runs on feedback (its ``check``
    hook), by the task of the prediction's model version, looked up in ``metadata`` (or in
    ``session``'s transaction when given) and remembered (a version's task never changes).

    A plain ``value`` is a label (:func:`check_label`: stored as ``{"label": ...}``); a dict of
    fields is any kind (:func:`check_feedback`: the stored value itself). ``redactor`` (a
    :class:`~dataflywheel.privacy.Redactor`, or a function giving the one to use now, e.g. the
    served model's) redacts the free text of corrections and comments; None: the default PII
    kinds (so free text is never stored raw unless a function returning None says so).
    """

    def __init__(self, metadata: MetadataStore | None = None,
                 redactor: Redactor | Callable[[], Redactor | None] | None = None) -> None:
        self.metadata = metadata
        self.redactor = redactor if redactor is not None else lazy_text_redactor(None)
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

    def text_redactor(self) -> Redactor | None:
        r = self.redactor
        return r() if callable(r) else r

    def __call__(self, prediction: Any, value: Any, session: Session | None = None) -> Any:
        task = self.task_of(prediction.model_version, session)
        if isinstance(value, Mapping):
            return check_feedback(prediction, value, task, self.text_redactor())
        return check_label(prediction, value, task)


LabelChecker = FeedbackChecker
"""The former name (labels were the only feedback)."""
