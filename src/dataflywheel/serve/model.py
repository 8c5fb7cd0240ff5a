"""The model a server holds: a loaded bundle plus what serving needs around it.

:class:`ServedModel` is immutable once built, so a future hot swap is one reference
assignment: a batch reads the server's model once and uses it throughout.

:meth:`ServedModel.forward` is the server's hot path: validated records go through the
preprocessor's record path (no DataFrame for small batches) and straight into the network,
already in eval mode, under ``torch.inference_mode``; the labels, probabilities and threshold
follow :meth:`Predictor.predict` exactly (tests compare the two).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from dataflywheel.models.predict import as_inputs, logits_to_output
from dataflywheel.registry.predictor import Predictor
from dataflywheel.serve.schemas import record_model, served_columns
from dataflywheel.store import Project


@dataclass(frozen=True)
class ServedModel:
    predictor: Predictor
    version: int | None
    metrics: dict[str, Any]
    columns: list[str]
    """The features a record must carry, in the preprocessor's order."""
    record_model: type[BaseModel]

    @property
    def task(self) -> str:
        return self.predictor.task

    @property
    def class_names(self) -> list[str] | None:
        return self.predictor.class_names

    def forward(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validated records -> ``{model_version, prediction, probabilities}`` each (one forward pass)."""
        p = self.predictor
        batch = p.preprocessor.transform_records(records)
        numeric, categorical = as_inputs(p.model, batch.numeric, batch.categorical)
        with torch.inference_mode():
            scores = logits_to_output(p.model(numeric, categorical), p.task)
        version = self.version
        if p.task == "regression":
            values = np.asarray(p.target.inverse_transform(scores.reshape(-1)), dtype=np.float64).tolist()
            return [{"model_version": version, "prediction": v, "probabilities": None} for v in values]
        if p.task == "binary":
            pos = scores.reshape(-1).astype(np.float64)
            proba = np.stack([1.0 - pos, pos], axis=1)
            idx = (pos >= p.threshold).astype(np.int64)
        else:
            proba = scores.astype(np.float64)
            idx = proba.argmax(axis=1)
        labels = p.target.inverse_transform(idx)
        names = [str(c) for c in self.class_names or []]
        return [{"model_version": version, "prediction": str(label), "probabilities": dict(zip(names, row, strict=True))}
                for label, row in zip(labels, proba.tolist(), strict=True)]

    def describe(self, alias: str | None = None) -> dict[str, Any]:
        schema = self.predictor.schema
        return {
            "version": self.version,
            "alias": alias,
            "task": self.task,
            "class_names": self.class_names,
            "features": {c: schema.column(c).type for c in self.columns},
            "threshold": self.predictor.threshold if self.task == "binary" else None,
            "metrics": self.metrics,
            "schema": schema.to_dict(),
        }


def build_served_model(predictor: Predictor, version: int | None, metrics: dict[str, Any]) -> ServedModel:
    columns = served_columns(predictor)
    return ServedModel(predictor, version, dict(metrics), columns, record_model(predictor.schema, columns))


def load_served_model(project: Project, ref: str | int, *, threads: int | None = None) -> ServedModel:
    """Resolve ``ref`` (alias or version), load and verify its bundle, set torch's threads."""
    from dataflywheel.registry import versions
    from dataflywheel.runtime import set_threads

    info = versions.resolve(project, ref)
    predictor = Predictor.load(project.artifacts.path(info.artifact))
    predictor.version = info.version
    n_params = sum(int(np.prod(p.shape)) for p in predictor.model.parameters())
    set_threads(threads, n_params)
    return build_served_model(predictor, info.version, info.metrics)
