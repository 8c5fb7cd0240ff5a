"""The target column to and from what a model trains on.

The task (:mod:`dataflywheel.tasks`) decides the encoding: binary trains on float32 0/1 with
``classes_[1]`` the positive class, multiclass on int64 class indices, regression on float32
standardised with the train mean and standard deviation. Labels are compared as strings;
``classes_`` is sorted. Same estimator contract as the feature encoders; the encoder holds the
fitted state, the task the rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from dataflywheel.errors import DataError, ModelError, NotFittedError

if TYPE_CHECKING:
    from dataflywheel.tasks import Task


def _no_missing(series: pl.Series) -> None:
    if series.null_count():
        from dataflywheel.tasks.classes import target_where

        raise DataError(
            f"has {series.null_count()} missing values",
            where=target_where(series),
            fix="drop or fill rows without a target before encoding it",
        )


class TargetEncoder:
    classes_: list[str]
    mean_: float
    std_: float

    def __init__(self, task: str) -> None:
        self.task = task

    @property
    def task_object(self) -> Task:
        """The registered task (an unknown name is a ConfigError at ``model.task``)."""
        from dataflywheel.tasks import get_task

        return get_task(self.task)

    def _check_fitted(self) -> None:
        from dataflywheel.tasks import available_tasks

        known = self.task in available_tasks()
        state = self.task_object.target_state if known else ()
        # A task without target state (generation) is fitted once fit (or from_dict) has run.
        fitted = all(hasattr(self, a) for a in state) and (bool(state) or self.__dict__.get("fitted_", False))
        if not known or not fitted:
            raise NotFittedError(f"TargetEncoder ({self.task}) is not fitted; call fit first")

    def fit(self, series: pl.Series) -> TargetEncoder:
        self.task_object.fit_target(self, series.drop_nulls())
        self.fitted_ = True
        return self

    def transform(self, series: pl.Series) -> np.ndarray:
        self._check_fitted()
        _no_missing(series)
        return self.task_object.encode_target(self, series)

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        """Model outputs back to labels (binary: a probability or 0/1, >= 0.5 is ``classes_[1]``;
        multiclass: indices or (n, k) scores) or to de-standardised numbers (regression)."""
        self._check_fitted()
        return self.task_object.decode_target(self, np.asarray(values))

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {"task": self.task, "state": {a: getattr(self, a) for a in self.task_object.target_state}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetEncoder:
        enc = cls(data["task"])
        for attr in enc.task_object.target_state:
            if attr not in data.get("state", {}):
                raise ModelError(f"target encoder state lacks '{attr}'", where="TargetEncoder")
            setattr(enc, attr, data["state"][attr])
        enc.fitted_ = True
        return enc
