"""Binary classification: one logit, p(``classes_[1]``) by a sigmoid, a decision threshold chosen
on the validation split; the target trains as float 0/1."""

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


class BinaryTask(ClassTask):
    name = "binary"
    loss = "bce"
    metrics: ClassVar[dict[str, bool]] = {
        "roc_auc": True, "pr_auc": True, "accuracy": True, "precision": True, "recall": True, "f1": True,
        "log_loss": False, "brier": False,
    }
    unbounded = frozenset({"log_loss"})
    guards = ("accuracy", "f1", "log_loss")
    headline = ("roc_auc", "accuracy", "f1")
    early_stopping = "roc_auc"
    explained = "log-odds"
    target_types = ("binary",)
    uses_threshold = True

    def fit_target(self, enc: TargetEncoder, series: pl.Series) -> None:
        classes = self.labels(series)
        if len(classes) != 2:
            raise DataError(f"target has {len(classes)} distinct values; a binary task needs exactly 2",
                            where=target_where(series), fix="set model.task: regression or multiclass")
        enc.classes_ = classes

    def encode_target(self, enc: TargetEncoder, series: pl.Series) -> np.ndarray:
        return self.indices(enc, series).astype(np.float32)

    def decode_target(self, enc: TargetEncoder, values: np.ndarray) -> np.ndarray:
        """A probability or 0/1 per row; >= 0.5 is ``classes_[1]``."""
        return self.names(enc, (np.asarray(values).reshape(-1) >= 0.5).astype(np.int64))

    def check_target(self, col: ColumnSchema, target: str) -> None:
        if col.n_unique > 2:
            raise DataError(
                f"target {target!r} has {col.n_unique} distinct values ({col.type}); a binary task needs exactly 2",
                where="model.task",
                fix="set model.task: regression (or multiclass), or choose another target",
            )

    def n_outputs(self, enc: TargetEncoder) -> int:
        return 1

    def valid_metrics(self) -> dict[str, Metric]:
        from sklearn.metrics import accuracy_score, roc_auc_score

        def auc(y: np.ndarray, s: np.ndarray) -> float:
            return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else float("nan")

        return {"roc_auc": auc, "accuracy": lambda y, s: float(accuracy_score(y, s >= 0.5))}

    def activate(self, logits: np.ndarray) -> np.ndarray:
        from scipy.special import expit

        proba: np.ndarray = expit(logits[:, 0] if logits.ndim == 2 else logits)
        return proba

    def scores(self, enc: TargetEncoder, outputs: np.ndarray) -> np.ndarray:
        return outputs.reshape(-1)

    def decode(self, enc: TargetEncoder, scores: np.ndarray, threshold: float) -> Decoded:
        p = scores.reshape(-1).astype(np.float64)
        idx = (p >= threshold).astype(np.int64)
        return Decoded(list(self.names(enc, idx)), np.stack([1.0 - p, p], axis=1))

    def agreement(self, scores: np.ndarray, reference: np.ndarray, threshold: float) -> float | None:
        if scores.size == 0:
            return None
        return float(np.mean((scores >= threshold) == (reference >= threshold)))

    def choose_threshold(self, y_true: np.ndarray, scores: np.ndarray) -> float:
        from dataflywheel.evaluate.metrics import choose_threshold

        return float(choose_threshold(y_true, scores))

    def evaluate(self, y_true: Any, scores: Any, class_names: list[str] | None, threshold: float) -> dict[str, Any]:
        from dataflywheel.evaluate.metrics import binary_metrics

        return binary_metrics(y_true, scores, threshold)

    def plots(self, reference: dict[str, Any], y_true: np.ndarray | None, scores: np.ndarray | None,
              class_names: list[str] | None, threshold: float) -> tuple[list[Plot], list[str]]:
        from dataflywheel.evaluate import plots

        out: list[Plot] = []
        notes: list[str] = []
        if y_true is not None and scores is not None:
            y = np.asarray(y_true).astype(np.int64).reshape(-1)
            s = np.asarray(scores, dtype=np.float64)
            p = s[:, 1] if s.ndim == 2 else s
            if len(np.unique(y)) == 2:
                out.append({"src": plots.roc_curve(y, p, threshold), "caption": "ROC curve"})
                out.append({"src": plots.pr_curve(y, p, threshold), "caption": "Precision-recall curve"})
            else:
                notes.append("ROC and precision-recall curves need both classes among the labels.")
            out.append({"src": plots.calibration(y, p, threshold), "caption": "Calibration"})
        cm = reference.get("confusion_matrix")
        if cm:
            labels = class_names or [str(i) for i in range(len(cm))]
            caption = f"Confusion matrix (rows: true, columns: predicted) at threshold {threshold:.3g}"
            out.append({"src": plots.confusion_matrix(cm, labels), "caption": caption})
        return out, notes

    def explain_class(self, logits: torch.Tensor, threshold: float) -> torch.Tensor:
        import torch

        return (torch.sigmoid(logits[:, 0]) >= threshold).long()

    def explain_score(self, logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.where(cls.bool(), logits[:, 0], -logits[:, 0])

    def explain_answers(self, enc: TargetEncoder, cls: np.ndarray, logits: np.ndarray) -> list[Any]:
        return list(self.names(enc, np.asarray(cls, dtype=np.int64)))
