"""Categories and binaries: values looked up in a sorted train vocabulary.

Values are compared as strings (:func:`~dataflywheel.data.schema.category_strings`: 1.0 reads
"1"); index 0 is an unknown or missing value.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from dataflywheel.data.schema import category_strings
from dataflywheel.errors import DataError
from dataflywheel.features.encoder import Encoder, OutputKind

SMALL_BATCH = 64
"""Up to this many rows, vocabulary lookups go through a Python dict rather than polars."""


def _strings(series: pl.Series) -> pl.Series:
    return series if series.dtype == pl.String else category_strings(series)


def _vocabulary(series: pl.Series) -> list[str]:
    return _strings(series).drop_nulls().unique().sort().to_list()


class VocabularyEncoder(Encoder):
    """Shared by encoders of a sorted vocabulary ``categories_``: index 1.. for each value, 0 for
    unknown or missing, by polars for long series and a cached dict for short ones."""

    _state = ("categories_",)
    categories_: list[str]

    def _index(self) -> dict[str, int]:
        cached = self.__dict__.get("_lookup")
        if cached is None or cached[0] is not self.categories_:  # refitted or loaded since
            cached = (self.categories_, {c: i for i, c in enumerate(self.categories_, 1)})
            self._lookup = cached
        return cached[1]

    def _indices(self, series: pl.Series) -> pl.Series:
        return _strings(series).replace_strict(
            self.categories_,
            list(range(1, len(self.categories_) + 1)),
            default=0,
            return_dtype=pl.Int64,
        )

    def index_values(self, values: Sequence[str | None]) -> tuple[np.ndarray, int]:
        """Indices (int64) of category strings, and how many present ones are unknown."""
        self._check_fitted()
        index = self._index()
        idx = np.fromiter(
            (0 if v is None else index.get(v, 0) for v in values), dtype=np.int64, count=len(values)
        )
        present = sum(v is not None for v in values)
        return idx, present - int(np.count_nonzero(idx))

    def index_series(self, series: pl.Series) -> tuple[np.ndarray, int]:
        """Indices of a series' values, and how many present ones are unknown."""
        self._check_fitted(series)
        s = _strings(series)
        if s.len() <= SMALL_BATCH:
            return self.index_values(s.to_list())
        idx = self._indices(s).to_numpy()
        return idx, s.len() - s.null_count() - int(np.count_nonzero(idx))

    def count_unknown(self, series: pl.Series) -> int:
        self._check_fitted(series)
        s = _strings(series)
        return int((s.is_not_null() & ~s.is_in(self.categories_)).sum())

    @abstractmethod
    def output(self, idx: np.ndarray) -> np.ndarray:
        """This encoder's output given the vocabulary indices."""

    def encode(self, series: pl.Series) -> tuple[np.ndarray, int]:
        idx, unknown = self.index_series(series)
        return self.output(idx), unknown


class CategoryEncoder(VocabularyEncoder):
    """A category as an index into its sorted train vocabulary; 0 is unknown or missing.

    With ``onehot`` the output is float32 one-hot of width ``len(categories_) + 1``.
    """

    name = "category"
    feature_type = "category"
    _state = ("categories_",)

    def __init__(self, onehot: bool = False) -> None:
        self.onehot = onehot

    def get_params(self) -> dict[str, Any]:
        return {"onehot": self.onehot}

    @property
    def kind(self) -> OutputKind:
        return "numeric" if self.onehot else "categorical"

    @property
    def width_(self) -> int:
        self._check_fitted()
        return len(self.categories_) + 1 if self.onehot else 1

    @property
    def cardinality_(self) -> int:
        """Distinct indices the output can take, the unknown bucket included."""
        self._check_fitted()
        return len(self.categories_) + 1

    def fit(self, series: pl.Series) -> CategoryEncoder:
        self.categories_: list[str] = _vocabulary(series)
        return self

    def output(self, idx: np.ndarray) -> np.ndarray:
        if not self.onehot:
            return idx
        out = np.zeros((len(idx), self.cardinality_), dtype=np.float32)
        out[np.arange(len(idx)), idx] = 1.0
        return out

    def transform(self, series: pl.Series) -> np.ndarray:
        self._check_fitted(series)
        return self.output(self._indices(series).to_numpy())


class BinaryEncoder(VocabularyEncoder):
    """A two-valued column as float32: the sorted values map to 0 and 1; unknown/missing to 0.5.

    More than two values at fit raise :class:`DataError`; a single value maps to 0.
    """

    name = "binary"
    feature_type = "binary"
    _state = ("categories_",)

    def fit(self, series: pl.Series) -> BinaryEncoder:
        values = _vocabulary(series)
        if len(values) > 2:
            raise DataError(
                f"has {len(values)} distinct values; a binary feature needs at most 2",
                where=f"column '{series.name}'",
                fix=f"set its type to category under data.features (name: {series.name})",
            )
        self.categories_: list[str] = values
        return self

    def output(self, idx: np.ndarray) -> np.ndarray:
        codes = np.array([0.5, *range(len(self.categories_))], dtype=np.float32)
        return np.take(codes, idx)

    def transform(self, series: pl.Series) -> np.ndarray:
        self._check_fitted(series)
        return self.output(self._indices(series).to_numpy())
