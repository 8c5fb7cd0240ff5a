"""Feedback labels are checked by the task of the model version that made the prediction."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from dataflywheel.errors import LabelError
from dataflywheel.feedback.labels import LabelChecker, check_label
from dataflywheel.tasks import RegressionTask, register_task, unregister_task


class EvenTask(RegressionTask):
    """A toy task whose labels are even numbers: only it knows that rule."""

    name = "even"

    def check_label(self, label: Any, classes: list[str] | None) -> Any:
        value = super().check_label(label, classes)
        if value % 2:
            raise LabelError(f"label {label!r} is odd", where="label")
        return value


@pytest.fixture
def even() -> Any:
    task = register_task(name="even", cls=EvenTask)
    yield task
    unregister_task("even")


def test_the_versions_task_decides(even: Any) -> None:
    checker = LabelChecker()
    checker.tasks[7] = "even"  # what the registry says version 7 is
    row = SimpleNamespace(model_version=7, output={"prediction": 2.0, "probabilities": None})
    assert checker(row, 4) == 4.0  # type: ignore[arg-type]
    with pytest.raises(LabelError, match="odd"):
        checker(row, 3)  # type: ignore[arg-type]
    unversioned = SimpleNamespace(model_version=None, output={"prediction": 2.0, "probabilities": None})
    assert checker(unversioned, 3) == 3.0  # type: ignore[arg-type]  # no version: the answer's shape decides


def test_an_answer_with_classes_takes_class_names_only() -> None:
    row = SimpleNamespace(output={"prediction": "b", "probabilities": {"a": 0.3, "b": 0.7}})
    assert check_label(row, "a") == "a"  # type: ignore[arg-type]
    with pytest.raises(LabelError, match="not one of the model's classes"):
        check_label(row, "c")  # type: ignore[arg-type]
