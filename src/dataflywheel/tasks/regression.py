"""Regression: one output, the target standardised with the train mean and standard deviation
for training and de-standardised for answers; the loss is MSE."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import polars as pl

from dataflywheel.errors import DataError, LabelError
from dataflywheel.tasks.base import Decoded, Metric, Plot, Task
from dataflywheel.tasks.classes import target_where

if TYPE_CHECKING:
    from dataflywheel.features.target import TargetEncoder


def floats(series: pl.Series) -> pl.Series:
    """``series`` as Float64; a value that is not a number is a :class:`DataError`."""
    values = series.cast(pl.Float64, strict=False)
    bad = series.is_not_null() & values.is_null()
    if bad.any():
        first = series.filter(bad)[0]
        raise DataError(
            f"has {first!r}, which is not a number; a regression target must be numeric",
            where=target_where(series),
            fix="clean the target, or set model.task: binary or multiclass",
        )
    return values


class RegressionTask(Task):
    name = "regression"
    loss = "mse"
    metrics: ClassVar[dict[str, bool]] = {"rmse": False, "mae": False, "r2": True}
    unbounded = frozenset({"rmse", "mae"})
    guards = ("mae", "r2")
    headline = ("rmse", "mae", "r2")
    live_metric = "mae"
    target_types = ("number",)
    target_state = ("mean_", "std_")
    has_classes = False
    loss_in_target_units = True

    def fit_target(self, enc: TargetEncoder, series: pl.Series) -> None:
        from dataflywheel.features.encoders import stat_or

        values = floats(series.drop_nulls())
        std = values.std(ddof=0)
        enc.mean_ = stat_or(values.mean(), 0.0)
        enc.std_ = stat_or(std, 1.0) if std else 1.0

    def encode_target(self, enc: TargetEncoder, series: pl.Series) -> np.ndarray:
        values = floats(series).to_numpy()
        return ((values - enc.mean_) / enc.std_).astype(np.float32)

    def decode_target(self, enc: TargetEncoder, values: np.ndarray) -> np.ndarray:
        return np.asarray(values).astype(np.float64) * enc.std_ + enc.mean_

    def true_values(self, enc: TargetEncoder, series: pl.Series) -> np.ndarray:
        return series.cast(pl.Float64).to_numpy()

    def n_outputs(self, enc: TargetEncoder) -> int:
        return 1

    def valid_metrics(self) -> dict[str, Metric]:
        from sklearn.metrics import r2_score

        return {"r2": lambda y, s: float(r2_score(y, s))}

    def target_scale(self, enc: TargetEncoder) -> float | None:
        return float(enc.std_)

    def activate(self, logits: np.ndarray) -> np.ndarray:
        return logits[:, 0] if logits.ndim == 2 else logits

    def scores(self, enc: TargetEncoder, outputs: np.ndarray) -> np.ndarray:
        return np.asarray(self.decode_target(enc, outputs.reshape(-1)), dtype=np.float64)

    def decode(self, enc: TargetEncoder, scores: np.ndarray, threshold: float) -> Decoded:
        return Decoded(np.asarray(scores, dtype=np.float64).tolist(), None)

    def evaluate(self, y_true: Any, scores: Any, class_names: list[str] | None, threshold: float) -> dict[str, Any]:
        from dataflywheel.evaluate.metrics import regression_metrics

        return regression_metrics(y_true, scores)

    def plots(self, reference: dict[str, Any], y_true: np.ndarray | None, scores: np.ndarray | None,
              class_names: list[str] | None, threshold: float) -> tuple[list[Plot], list[str]]:
        from dataflywheel.evaluate import plots

        if y_true is None or scores is None:
            return [], []
        src = plots.regression_plots(np.asarray(y_true, dtype=np.float64), np.asarray(scores))
        return [{"src": src, "caption": "Predicted vs actual, and residuals"}], []

    def explain_scale(self, enc: TargetEncoder) -> tuple[float, float]:
        return float(enc.std_), float(enc.mean_)

    def explain_answers(self, enc: TargetEncoder, cls: np.ndarray, logits: np.ndarray) -> list[Any]:
        return list(self.decode_target(enc, logits[:, 0]))

    def live_score(self, predicted: Any, label: Any) -> float:
        return abs(float(predicted) - float(label))

    def check_label(self, label: Any, classes: list[str] | None) -> Any:
        """A number (a string is refused, even one that reads as a number)."""
        if isinstance(label, str):
            raise LabelError(f"label must be a number for a regression model (got {label!r})", where="label")
        return float(label)
