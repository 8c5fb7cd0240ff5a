"""Prediction from a model bundle alone: no training data, no store needed.

:class:`Predictor` is what ``flywheel predict``, the Python API and (later) the server run:
the same ``Preprocessor`` that was fitted at training time turns records into tensors, so
training and serving cannot disagree about features.

Before the preprocessor, every path redacts PII the way the model's training data was redacted
(:attr:`Predictor.redaction`, from the ``privacy`` settings ``model.json`` records; see
:mod:`dataflywheel.privacy.inputs`): :meth:`Predictor.predict` and :meth:`Predictor.scores` on a
frame, :meth:`Predictor.redact_records` on records (the server and explanations).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from dataflywheel.config import PrivacyConfig
from dataflywheel.errors import DataError
from dataflywheel.privacy.inputs import InputRedaction
from dataflywheel.registry.bundle import ModelBundle, read_bundle

if TYPE_CHECKING:
    from torch import nn

    from dataflywheel.data.schema import Schema
    from dataflywheel.features.encoded import EncodedBatch
    from dataflywheel.features.preprocessor import Preprocessor
    from dataflywheel.features.target import TargetEncoder
    from dataflywheel.tasks import Decoded, Task


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
    """Texts per text column longer than the model's max_length (cut to it)."""
    coerced: dict[str, int] = field(default_factory=dict)
    """Cells per feature that could not be read (or were infinite) and were scored as missing."""
    redacted: dict[str, int] = field(default_factory=dict)
    """PII matches per kind replaced in the inputs before the model saw them."""

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
    """A loaded, verified model bundle: a :class:`ModelBundle` and the redaction of its inputs.

    Setting ``model``, ``threshold`` or ``version`` replaces :attr:`bundle` with a changed copy,
    so a shallow copy of a predictor (a serving backend's) never changes the original."""

    def __init__(self, bundle: ModelBundle, *, folder: Path | None = None, privacy: PrivacyConfig | None = None):
        """``folder``: where the bundle was read from (None: in memory). ``privacy``: the
        redaction settings of a bundle that records none (default: :class:`PrivacyConfig`'s
        defaults); a recorded one always wins."""
        self.bundle = bundle
        self.folder = Path(folder) if folder is not None else Path(".")
        self.answer_memo: dict[str, list[str]] = {}
        """A generation model's greedy answers per (prompts, settings) key while it has no
        version to cache them under (:func:`~dataflywheel.registry.generation.cached_answers`)."""
        self.redaction = self.redaction_for(bundle.privacy if bundle.privacy is not None else privacy)

    @property
    def model(self) -> nn.Module:
        return self.bundle.model

    @model.setter
    def model(self, value: nn.Module) -> None:
        """Another network in the bundle's place (a serving backend's, e.g. ONNX Runtime's)."""
        self.bundle = replace(self.bundle, model=value)

    @property
    def preprocessor(self) -> Preprocessor:
        return self.bundle.preprocessor

    @property
    def target(self) -> TargetEncoder:
        return self.bundle.target

    @property
    def schema(self) -> Schema | None:
        return self.bundle.schema

    @property
    def task(self) -> str:
        return self.bundle.task

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.bundle = replace(self.bundle, threshold=value)

    @property
    def version(self) -> int | None:
        return self.bundle.version

    @version.setter
    def version(self, value: int | None) -> None:
        self.bundle = replace(self.bundle, version=value)

    @property
    def meta(self) -> dict[str, Any]:
        """The bundle's ``model.json`` (:meth:`ModelBundle.model_json`)."""
        return self.bundle.model_json()

    def redaction_for(self, privacy: PrivacyConfig | dict[str, Any] | None) -> InputRedaction:
        """The input redaction ``privacy`` asks for on this model's inputs."""
        texts = getattr(self.preprocessor, "__dict__", {}).get("text_encoders_", {})
        return InputRedaction.for_inputs(privacy, self.input_columns, list(texts))

    @property
    def input_columns(self) -> list[str]:
        """The columns the preprocessor reads, text columns included."""
        columns = getattr(self.preprocessor, "input_columns_", None) or getattr(self.preprocessor, "encoders_", None)
        if columns:
            return list(columns)
        return [c.name for c in self.schema.features] if self.schema is not None else []

    def redact_records(self, records: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Records with PII redacted as the model's training data was, and counts per kind."""
        return self.redaction.records(records)

    @classmethod
    def load(cls, folder: str | Path, *, privacy: PrivacyConfig | None = None,
             base_dir: Path | None = None, model_from: Any = None) -> Predictor:
        """Verify and load the bundle in ``folder`` (:func:`read_bundle`; ``privacy``: see
        :meth:`__init__`; ``model_from``: see :func:`read_bundle`). A base model the bundle names
        by a relative path is looked up in ``base_dir`` (the project's folder), then in the
        bundle folder's parents."""
        bundle = read_bundle(Path(folder), base_dirs=[Path(base_dir)] if base_dir is not None else None,
                             model_from=model_from)
        return cls(bundle, folder=Path(folder), privacy=privacy)

    @property
    def task_object(self) -> Task:
        from dataflywheel.tasks import get_task

        return get_task(self.task)

    @property
    def class_names(self) -> list[str] | None:
        return self.task_object.class_names(self.target)

    def scores(self, df: pl.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
        """Raw model scores (:meth:`Task.scores`): p(positive) (n,) for binary, (n, k)
        probabilities for multiclass, de-standardised values (n,) for regression; plus
        unknown-category counts."""
        out, batch, _ = self._scores(df)
        return out, dict(batch.unknown)

    def _scores(self, df: pl.DataFrame) -> tuple[np.ndarray, EncodedBatch, dict[str, int]]:
        from dataflywheel.models.registry import predict_proba

        df, redacted = self.redaction.frame(df)
        batch = self.preprocessor.transform(df)
        out = predict_proba(self.model, batch.inputs, self.task, pad_id=self.preprocessor.pad_ids_)
        return self.task_object.scores(self.target, out), batch, redacted

    def decode(self, scores: np.ndarray) -> Decoded:
        """Scores -> answers (labels and class probabilities, or values): the one decoding that
        :meth:`predict` and the server's forward pass share."""
        return self.task_object.decode(self.target, scores, self.threshold)

    def generate(self, prompts: str | Sequence[str], *, max_new_tokens: int = 64) -> Any:
        """A generation model's greedy answer to a prompt (a string in, a string out) or to each
        of a list of prompts (:func:`~dataflywheel.registry.generation.generate`)."""
        from dataflywheel.registry.generation import generate

        if isinstance(prompts, str):
            return generate(self, [prompts], max_new_tokens=max_new_tokens)[0]
        return generate(self, list(prompts), max_new_tokens=max_new_tokens)

    def predict(self, rows: Any) -> Predictions:
        """Predictions for records (dicts), a polars or pandas frame; text columns hold raw text."""
        df = to_frame(rows)
        scores, batch, redacted = self._scores(df)
        decoded = self.decode(scores)
        classes = self.class_names if decoded.proba is not None else None
        return Predictions(self.task, decoded.values, decoded.proba, classes, dict(batch.unknown),
                           dict(batch.truncated), dict(batch.coerced), redacted)
