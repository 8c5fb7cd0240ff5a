"""The Preprocessor: a table in, model-ready arrays out, identically at training and serving time.

It holds one encoder per feature column (see :mod:`dataflywheel.features.encoders`), fitted
on the train split only. Numbers, binaries, datetimes and one-hot categories join a float32
``numeric`` block; index-encoded categories join an int64 ``categorical`` block (for
embeddings, with ``cardinalities_`` giving each one's size). Its whole state is JSON, saved
atomically, so a bundle's ``preprocessor.json`` reproduces the training-time encoding exactly.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from dataflywheel.errors import ConfigError, DataError, ModelError, NotFittedError, SchemaError
from dataflywheel.features.encoders import ENCODERS, CategoryEncoder, Encoder

if TYPE_CHECKING:
    from dataflywheel.config import FeatureConfig
    from dataflywheel.data.schema import Schema

FORMAT = "dataflywheel.preprocessor/1"

# (feature type, encoder option) -> (registered encoder, its parameters)
_OPTIONS: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("number", "auto"): ("number", {"method": "zscore"}),
    ("number", "zscore"): ("number", {"method": "zscore"}),
    ("number", "minmax"): ("number", {"method": "minmax"}),
    ("number", "none"): ("number", {"method": "none"}),
    ("category", "auto"): ("category", {"onehot": False}),
    ("category", "index"): ("category", {"onehot": False}),
    ("category", "onehot"): ("category", {"onehot": True}),
    ("binary", "auto"): ("binary", {}),
    ("datetime", "auto"): ("datetime", {}),
}


@dataclass
class EncodedBatch:
    numeric: np.ndarray
    """float32 (n, n_numeric)"""
    categorical: np.ndarray
    """int64 (n, n_categorical)"""
    unknown: dict[str, int]
    """Cells per feature holding a category unseen at fit time (features with none left out)."""


def build_encoder(column: str, feature_type: str, encoder: str) -> Encoder:
    """A fresh encoder for one feature: a registered encoder name, or an option of its type."""
    if (feature_type, encoder) in _OPTIONS:
        name, params = _OPTIONS[(feature_type, encoder)]
        return ENCODERS[name](**params)
    if encoder in ENCODERS:
        return ENCODERS[encoder]()
    if feature_type == "text":
        raise ConfigError(
            "text columns cannot be encoded as tabular features yet",
            where=f"data.features ({column})",
            fix="add it to data.exclude or give it another type",
        )
    options = sorted(opt for ftype, opt in _OPTIONS if ftype == feature_type)
    raise ConfigError(
        f"encoder {encoder!r} does not apply to a {feature_type} column",
        where=f"data.features ({column}).encoder",
        fix=f"use one of {options} or a registered encoder {sorted(ENCODERS)}",
    )


def _require_columns(df: pl.DataFrame, columns: Iterable[str]) -> None:
    for col in columns:
        if col not in df.columns:
            raise SchemaError(
                "input column is missing",
                where=f"column '{col}'",
                fix="send every feature the model was trained on",
            )


class Preprocessor:
    """Encode ``features``: a list of (column, feature type, encoder name or "auto").

    ``skipped`` lists columns deliberately left out (text, for now), kept for reporting.
    """

    def __init__(
        self, features: Sequence[tuple[str, str, str]], skipped: Sequence[str] = ()
    ) -> None:
        self.features = [tuple(f) for f in features]
        self.skipped = list(skipped)

    @classmethod
    def from_schema(
        cls,
        schema: Schema,
        overrides: Sequence[FeatureConfig] = (),
        exclude: Iterable[str] = (),
    ) -> Preprocessor:
        """Non-target schema columns, minus ``exclude``; ``overrides`` change type or encoder."""
        excluded = set(exclude)
        names = {c.name for c in schema.features}
        by_name: dict[str, FeatureConfig] = {}
        for ov in overrides:
            if ov.name not in names:
                raise ConfigError(
                    f"'{ov.name}' is not a feature column",
                    where="data.features",
                    fix="use a column of the data other than the target, or remove the entry",
                )
            by_name[ov.name] = ov
        features: list[tuple[str, str, str]] = []
        skipped: list[str] = []
        for col in schema.features:
            if col.name in excluded:
                continue
            override = by_name.get(col.name)
            ftype = (override.type if override is not None else None) or col.type
            encoder = override.encoder if override is not None else "auto"
            if ftype == "text":
                skipped.append(col.name)
                continue
            build_encoder(col.name, ftype, encoder)  # reject a bad combination now, not at fit
            features.append((col.name, ftype, encoder))
        return cls(features, skipped)

    def fit(self, df: pl.DataFrame) -> Preprocessor:
        """Fit every encoder on ``df`` (the train split)."""
        _require_columns(df, (f[0] for f in self.features))
        self.encoders_: dict[str, Encoder] = {
            col: build_encoder(col, ftype, enc).fit(df[col]) for col, ftype, enc in self.features
        }
        return self

    def _fitted(self) -> dict[str, Encoder]:
        if not hasattr(self, "encoders_"):
            raise NotFittedError("Preprocessor is not fitted; call fit on the train split first")
        return self.encoders_

    @property
    def n_numeric_(self) -> int:
        return sum(e.width_ for e in self._fitted().values() if e.kind == "numeric")

    @property
    def cardinalities_(self) -> list[int]:
        """Per categorical column, the number of indices (unknown bucket included)."""
        return [
            e.cardinality_
            for e in self._fitted().values()
            if isinstance(e, CategoryEncoder) and e.kind == "categorical"
        ]

    @property
    def feature_names_out_(self) -> list[str]:
        """Names of the numeric block's columns, then of the categorical block's."""
        numeric: list[str] = []
        categorical: list[str] = []
        for col, enc in self._fitted().items():
            if enc.kind == "categorical":
                categorical.append(col)
            elif isinstance(enc, CategoryEncoder):
                numeric += [f"{col}=<unknown>", *(f"{col}={c}" for c in enc.categories_)]
            else:
                numeric.append(col)
        return numeric + categorical

    def transform(self, df: pl.DataFrame) -> EncodedBatch:
        encoders = self._fitted()
        _require_columns(df, encoders)
        n = df.height
        numeric = np.empty((n, self.n_numeric_), dtype=np.float32)
        categorical = np.empty((n, len(self.cardinalities_)), dtype=np.int64)
        unknown: dict[str, int] = {}
        i = j = 0
        for col, enc in encoders.items():
            series = df[col]
            out = enc.transform(series)
            if enc.kind == "categorical":
                categorical[:, j] = out
                j += 1
            else:
                w = enc.width_
                numeric[:, i : i + w] = out.reshape(n, w)
                i += w
            n_unknown = enc.count_unknown(series)
            if n_unknown:
                unknown[col] = n_unknown
        return EncodedBatch(numeric=numeric, categorical=categorical, unknown=unknown)

    def to_dict(self) -> dict[str, Any]:
        encoders = self._fitted()
        return {
            "format": FORMAT,
            "features": [list(f) for f in self.features],
            "skipped": self.skipped,
            "encoders": {col: enc.to_dict() for col, enc in encoders.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        if data.get("format") != FORMAT:
            raise ModelError(
                f"unsupported preprocessor format {data.get('format')!r} (expected {FORMAT})",
                fix="re-train the model with this version of dataflywheel",
            )
        pre = cls([tuple(f) for f in data["features"]], data.get("skipped", ()))
        pre.encoders_ = {col: Encoder.from_dict(d) for col, d in data["encoders"].items()}
        return pre

    def save(self, path: str | Path) -> Path:
        """Write JSON to ``path`` atomically (a temp file beside it, then ``os.replace``)."""
        path = Path(path)
        text = json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False, indent=1)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> Preprocessor:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except FileNotFoundError:
            raise ModelError("preprocessor file not found", where=str(path)) from None
        except ModelError as exc:
            raise ModelError(exc.message, where=str(path), fix=exc.fix) from None
        except (ValueError, KeyError, TypeError, AttributeError, DataError) as exc:
            raise ModelError(
                f"not a valid preprocessor file ({exc})",
                where=str(path),
                fix="re-train the model or restore the file",
            ) from None
