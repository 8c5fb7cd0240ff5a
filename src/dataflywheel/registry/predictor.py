"""Prediction from a model bundle alone: no training data, no store needed.

:class:`Predictor` is what ``flywheel predict``, the Python API and (later) the server run:
the same ``Preprocessor`` that was fitted at training time turns records into tensors, so
training and serving cannot disagree about features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from dataflywheel.errors import DataError
from dataflywheel.registry.bundle import read_json, verify_bundle


@dataclass
class Predictions:
    task: str
    values: list[Any]
    """Predicted label (classification) or value (regression) per row."""
    proba: np.ndarray | None
    """(n, k) class probabilities, columns in ``class_names`` order; None for regression."""
    class_names: list[str] | None
    unknown: dict[str, int] = field(default_factory=dict)
    """Cells per feature that held a category unseen at training time (encoded as unknown)."""
    truncated: dict[str, int] = field(default_factory=dict)
    coerced: dict[str, int] = field(default_factory=dict)
    """Cells per feature that could not be read (or were infinite) and were scored as missing."""
    """Texts per text column longer than the model's max_length (cut to it)."""

    def to_frame(self) -> pl.DataFrame:
        cols: dict[str, Any] = {"prediction": self.values}
        if self.proba is not None and self.class_names is not None:
            for j, name in enumerate(self.class_names):
                cols[f"proba_{name}"] = self.proba[:, j].astype(np.float64)
        return pl.DataFrame(cols)

    def records(self) -> list[dict[str, Any]]:
        return self.to_frame().to_dicts()


def to_frame(rows: Any) -> pl.DataFrame:
    """Accept a polars or pandas DataFrame, a list of dicts, or one dict."""
    if isinstance(rows, pl.DataFrame):
        return rows
    if isinstance(rows, dict):
        rows = [rows]
    if isinstance(rows, list):
        if not rows:
            raise DataError("no records to predict", fix="pass at least one record")
        return pl.DataFrame(rows, infer_schema_length=None)
    if type(rows).__module__.startswith("pandas"):
        return pl.from_pandas(rows)
    raise DataError(f"cannot predict on a {type(rows).__name__}", fix="pass records as dicts or a DataFrame")


class Predictor:
    """A loaded, verified model bundle."""

    def __init__(self, folder: Path, model: Any, meta: dict[str, Any], preprocessor: Any, target: Any, schema: Any):
        self.folder = Path(folder)
        self.model = model
        self.meta = meta
        self.preprocessor = preprocessor
        self.target = target
        self.schema = schema
        self.task: str = meta["task"]
        self.threshold: float = float(meta.get("threshold", 0.5))
        self.version: int | None = meta.get("version")

    @classmethod
    def load(cls, folder: str | Path) -> Predictor:
        from safetensors.torch import load_file

        from dataflywheel.data.schema import Schema
        from dataflywheel.features.preprocessor import Preprocessor
        from dataflywheel.features.target import TargetEncoder
        from dataflywheel.models.registry import build_model
        from dataflywheel.models.weights import load_trained_weights

        folder = Path(folder)
        verify_bundle(folder)
        meta = read_json(folder, "model.json")
        model = build_model(meta["spec"])  # a pretrained model checks its base's hash here
        weights = load_file(str(folder / "model.safetensors"))
        load_trained_weights(model, weights)
        if hasattr(model, "for_inference"):
            model = model.for_inference()  # e.g. LoRA adapters folded into the base weights
        model.eval()
        pre = Preprocessor.load(folder / "preprocessor.json")
        target = TargetEncoder.from_dict(meta["target_encoder"])
        schema = Schema.load(folder / "schema.json")
        return cls(folder, model, meta, pre, target, schema)

    @property
    def class_names(self) -> list[str] | None:
        return list(self.target.classes_) if self.task != "regression" else None

    def scores(self, df: pl.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
        """Raw model scores: p(positive) (n,) for binary, (n, k) probabilities for multiclass,
        de-standardised values (n,) for regression; plus unknown-category counts."""
        out, batch = self._scores(df)
        return out, dict(batch.unknown)

    def _scores(self, df: pl.DataFrame) -> tuple[np.ndarray, Any]:
        from dataflywheel.models.registry import predict_proba

        batch = self.preprocessor.transform(df)
        text = getattr(self.preprocessor, "text_encoder_", None)
        out = predict_proba(self.model, batch.numeric, batch.categorical, self.task, tokens=batch.tokens,
                            pad_id=text.pad_id_ if text is not None else 0)
        if self.task == "regression":
            out = np.asarray(self.target.inverse_transform(out.reshape(-1)), dtype=np.float64)
        elif self.task == "binary":
            out = out.reshape(-1)
        return out, batch

    def predict(self, rows: Any) -> Predictions:
        """Predictions for records (dicts), a polars or pandas frame; text columns hold raw text."""
        df = to_frame(rows)
        scores, batch = self._scores(df)
        unknown, truncated, coerced = dict(batch.unknown), dict(batch.truncated), dict(batch.coerced)
        if self.task == "regression":
            return Predictions(self.task, scores.tolist(), None, None, unknown, truncated, coerced)
        classes = self.class_names or []
        if self.task == "binary":
            p = scores.astype(np.float64)
            proba = np.stack([1.0 - p, p], axis=1)
            idx = (p >= self.threshold).astype(np.int64)
        else:
            proba = scores.astype(np.float64)
            idx = proba.argmax(axis=1)
        labels = self.target.inverse_transform(idx)
        return Predictions(self.task, list(labels), proba, classes, unknown, truncated, coerced)
