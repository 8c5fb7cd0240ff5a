"""The model a server holds: a loaded bundle plus what serving needs around it.

:class:`ServedModel` is immutable once built, so a future hot swap is one reference
assignment: a batch reads the server's model once and uses it throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel

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
    frame_schema: dict[str, Any]

    @property
    def task(self) -> str:
        return self.predictor.task

    @property
    def class_names(self) -> list[str] | None:
        return self.predictor.class_names

    def forward(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validated records -> ``{model_version, prediction, probabilities}`` each (one forward pass)."""
        df = pl.DataFrame(records, schema=self.frame_schema)
        preds = self.predictor.predict(df)
        out = []
        for i, value in enumerate(preds.values):
            probabilities = None
            if preds.proba is not None and preds.class_names is not None:
                probabilities = {str(c): float(p) for c, p in zip(preds.class_names, preds.proba[i], strict=True)}
                value = str(value)
            else:
                value = float(value)
            out.append({"model_version": self.version, "prediction": value, "probabilities": probabilities})
        return out

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
    schema = predictor.schema
    frame_schema = {c: pl.Float64 if schema.column(c).type == "number" else pl.String for c in columns}
    return ServedModel(predictor, version, dict(metrics), columns, record_model(schema, columns), frame_schema)


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
