"""Multiclass classification: one logit per class, a softmax, the most probable class; the
target trains as int64 class indices."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import polars as pl

from dataflywheel.errors import DataError
from dataflywheel.tasks.base import Decoded, Metric, Plot
from dataflywheel.tasks.classes import ClassTask, target_where

if TYPE_CHECKING:
    import torch

    from dataflywheel.data.schema import ColumnSchema
    from dataflywheel.features.target import TargetEncoder

CONTINUOUS = 100
"""A number column with more distinct values than this is not a multiclass target."""


class MulticlassTask(ClassTask):
    name = "multiclass"
    loss = "cross_entropy"
    metrics: ClassVar[dict[str, bool]] = {"macro_f1": True, "accuracy": True, "log_loss": False}
    unbounded = frozenset({"log_loss"})
    guards = ("accuracy", "log_loss")
    headline = ("accuracy", "macro_f1")
    explained = "log-probability"
    target_types = ("category",)
    outputs_expected = "k >= 2 (one per class)"

    def fit_target(self, enc: TargetEncoder, series: pl.Series) -> None:
        classes = self.labels(series)
        if len(classes) < 2:
            raise DataError(f"target has {len(classes)} distinct values; a multiclass task needs at least 2",
                            where=target_where(series), fix="check the data, or set model.task: regression")
        enc.classes_ = classes

    def decode_target(self, enc: TargetEncoder, values: np.ndarray) -> np.ndarray:
        """Class indices, or (n, k) scores (the highest wins)."""
        arr = np.asarray(values)
        return self.names(enc, arr.argmax(axis=1) if arr.ndim == 2 else arr.astype(np.int64))

    def check_target(self, col: ColumnSchema, target: str) -> None:
        if col.type == "number" and col.n_unique > CONTINUOUS:
            raise DataError(f"target {target!r} looks continuous ({col.n_unique} distinct values)",
                            where="model.task", fix="set model.task: regression")

    def n_outputs(self, enc: TargetEncoder) -> int:
        return len(enc.classes_)

    def outputs_ok(self, n_outputs: int) -> bool:
        return n_outputs >= 2

    def prepare_y(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return y.long()

    def valid_metrics(self) -> dict[str, Metric]:
        from sklearn.metrics import accuracy_score

        return {"accuracy": lambda y, s: float(accuracy_score(y, s.argmax(axis=1)))}

    def activate(self, logits: np.ndarray) -> np.ndarray:
        from scipy.special import softmax

        proba: np.ndarray = softmax(logits, axis=-1)
        return proba

    def decode(self, enc: TargetEncoder, scores: np.ndarray, threshold: float) -> Decoded:
        proba = scores.astype(np.float64)
        return Decoded(list(self.names(enc, proba.argmax(axis=1))), proba)

    def agreement(self, scores: np.ndarray, reference: np.ndarray, threshold: float) -> float | None:
        if scores.size == 0:
            return None
        return float(np.mean(scores.argmax(axis=1) == reference.argmax(axis=1)))

    def evaluate(self, y_true: Any, scores: Any, class_names: list[str] | None, threshold: float) -> dict[str, Any]:
        from dataflywheel.evaluate.metrics import multiclass_metrics

        if class_names is None:
            class_names = [str(i) for i in range(np.asarray(scores).shape[1])]
        return multiclass_metrics(y_true, scores, class_names)

    def plots(self, reference: dict[str, Any], y_true: np.ndarray | None, scores: np.ndarray | None,
              class_names: list[str] | None, threshold: float) -> tuple[list[Plot], list[str]]:
        from dataflywheel.evaluate import plots

        cm = reference.get("confusion_matrix")
        if not cm:
            return [], []
        labels = class_names or [str(i) for i in range(len(cm))]
        return [{"src": plots.confusion_matrix(cm, labels),
                 "caption": "Confusion matrix (rows: true, columns: predicted)"}], []

    def per_class(self, reference: dict[str, Any]) -> dict[str, Any] | None:
        found: dict[str, Any] | None = reference.get("per_class")
        return found

    def explain_class(self, logits: torch.Tensor, threshold: float) -> torch.Tensor:
        return logits.argmax(dim=1)

    def explain_score(self, logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.log_softmax(logits, dim=1).gather(1, cls[:, None])[:, 0]

    def explain_answers(self, enc: TargetEncoder, cls: np.ndarray, logits: np.ndarray) -> list[Any]:
        return list(self.names(enc, np.asarray(cls, dtype=np.int64)))
