"""The target column to and from what a model trains on.

binary: float32 0/1, ``classes_[1]`` the positive class; multiclass: int64 class index;
regression: float32 standardised with the train mean and standard deviation. Labels are
compared as strings; ``classes_`` is sorted. Same estimator contract as the feature encoders.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import polars as pl

from dataflywheel.data.schema import category_strings
from dataflywheel.errors import ConfigError, DataError, ModelError, NotFittedError
from dataflywheel.features.encoders import stat_or

TargetTask = Literal["binary", "multiclass", "regression"]
_STATE: dict[str, tuple[str, ...]] = {
    "binary": ("classes_",),
    "multiclass": ("classes_",),
    "regression": ("mean_", "std_"),
}


def _where(series: pl.Series) -> str:
    return f"target '{series.name}'" if series.name else "target"


def _no_missing(series: pl.Series) -> None:
    if series.null_count():
        raise DataError(
            f"has {series.null_count()} missing values",
            where=_where(series),
            fix="drop or fill rows without a target before encoding it",
        )


class TargetEncoder:
    def __init__(self, task: TargetTask) -> None:
        self.task = task

    def _check_fitted(self) -> None:
        if not all(hasattr(self, a) for a in _STATE.get(self.task, ())):
            raise NotFittedError(f"TargetEncoder ({self.task}) is not fitted; call fit first")

    def fit(self, series: pl.Series) -> TargetEncoder:
        if self.task not in _STATE:
            raise ConfigError(
                f"unknown task {self.task!r}",
                where="model.task",
                fix="use binary, multiclass or regression",
            )
        s = series.drop_nulls()
        if self.task == "regression":
            values = self._floats(s)
            std = values.std(ddof=0)
            self.mean_ = stat_or(values.mean(), 0.0)
            self.std_ = stat_or(std, 1.0) if std else 1.0
            return self
        classes = category_strings(s).unique().sort().to_list()
        if self.task == "binary" and len(classes) != 2:
            raise DataError(
                f"target has {len(classes)} distinct values; a binary task needs exactly 2",
                where=_where(series),
                fix="set model.task: regression or multiclass",
            )
        if self.task == "multiclass" and len(classes) < 2:
            raise DataError(
                f"target has {len(classes)} distinct values; a multiclass task needs at least 2",
                where=_where(series),
                fix="check the data, or set model.task: regression",
            )
        self.classes_: list[str] = classes
        return self

    @staticmethod
    def _floats(series: pl.Series) -> pl.Series:
        values = series.cast(pl.Float64, strict=False)
        bad = series.is_not_null() & values.is_null()
        if bad.any():
            first = series.filter(bad)[0]
            raise DataError(
                f"has {first!r}, which is not a number; a regression target must be numeric",
                where=_where(series),
                fix="clean the target, or set model.task: binary or multiclass",
            )
        return values

    def transform(self, series: pl.Series) -> np.ndarray:
        self._check_fitted()
        _no_missing(series)
        if self.task == "regression":
            values = self._floats(series).to_numpy()
            return ((values - self.mean_) / self.std_).astype(np.float32)
        labels = category_strings(series)
        unknown = labels.filter(~labels.is_in(self.classes_))
        if len(unknown):
            raise DataError(
                f"has label {unknown[0]!r}, not one of the known classes {self.classes_}",
                where=_where(series),
                fix="drop those rows or re-train with them",
            )
        idx = labels.replace_strict(
            self.classes_, list(range(len(self.classes_))), return_dtype=pl.Int64
        ).to_numpy()
        return idx.astype(np.float32) if self.task == "binary" else idx

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        """Model outputs back to labels (binary: a probability or 0/1, >= 0.5 is ``classes_[1]``;
        multiclass: indices or (n, k) scores) or to de-standardised numbers (regression)."""
        self._check_fitted()
        arr = np.asarray(values)
        if self.task == "regression":
            return arr.astype(np.float64) * self.std_ + self.mean_
        if self.task == "binary":
            idx = (arr.reshape(-1) >= 0.5).astype(np.int64)
        else:
            idx = arr.argmax(axis=1) if arr.ndim == 2 else arr.astype(np.int64)
        return np.asarray(self.classes_, dtype=object)[idx]

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {"task": self.task, "state": {a: getattr(self, a) for a in _STATE[self.task]}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetEncoder:
        enc = cls(data["task"])
        for attr in _STATE.get(enc.task, ()):
            if attr not in data.get("state", {}):
                raise ModelError(f"target encoder state lacks '{attr}'", where="TargetEncoder")
            setattr(enc, attr, data["state"][attr])
        return enc
