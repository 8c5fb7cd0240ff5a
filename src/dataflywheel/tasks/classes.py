"""What the classification tasks share: class names as the target's state, labels compared as
strings, ``classes_`` sorted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import polars as pl

from dataflywheel.errors import DataError, LabelError
from dataflywheel.tasks.base import Task

if TYPE_CHECKING:
    from dataflywheel.features.target import TargetEncoder


def target_where(series: pl.Series) -> str:
    return f"target '{series.name}'" if series.name else "target"


class ClassTask(Task):
    """A task whose answers are the target's classes, indexed ``0..k-1`` in sorted order."""

    target_state: ClassVar[tuple[str, ...]] = ("classes_",)
    target_types: ClassVar[tuple[str, ...]] = ()

    def labels(self, series: pl.Series) -> list[str]:
        from dataflywheel.data.schema import category_strings

        classes: list[str] = category_strings(series.drop_nulls()).unique().sort().to_list()
        return classes

    def fit_target(self, enc: TargetEncoder, series: pl.Series) -> None:
        enc.classes_ = self.labels(series)

    def indices(self, enc: TargetEncoder, series: pl.Series) -> np.ndarray:
        from dataflywheel.data.schema import category_strings

        labels = category_strings(series)
        unknown = labels.filter(~labels.is_in(enc.classes_))
        if len(unknown):
            raise DataError(
                f"has label {unknown[0]!r}, not one of the known classes {enc.classes_}",
                where=target_where(series),
                fix="drop those rows or re-train with them",
            )
        return labels.replace_strict(enc.classes_, list(range(len(enc.classes_))), return_dtype=pl.Int64).to_numpy()

    def encode_target(self, enc: TargetEncoder, series: pl.Series) -> np.ndarray:
        return self.indices(enc, series)

    def true_values(self, enc: TargetEncoder, series: pl.Series) -> np.ndarray:
        return np.asarray(enc.transform(series)).astype(np.int64)

    def class_names(self, enc: TargetEncoder) -> list[str] | None:
        return list(enc.classes_)

    def names(self, enc: TargetEncoder, idx: np.ndarray) -> np.ndarray:
        names: np.ndarray = np.asarray(enc.classes_, dtype=object)[idx]
        return names

    def check_label(self, label: Any, classes: list[str] | None) -> Any:
        """One of the answer's class names (a whole float such as ``1.0`` reads as ``"1"``)."""
        known = list(classes or [])
        text = str(int(label)) if isinstance(label, float) and label.is_integer() else str(label)
        if text not in known:
            raise LabelError(f"label {label!r} is not one of the model's classes {known}", where="label",
                             fix="send one of the classes listed by /v1/model")
        return text
