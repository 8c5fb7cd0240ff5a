"""Numbers as float32: the number encoder, and the scaling the datetime encoder shares.

A cell that cannot be read (``"abc"``) or is infinite counts as *coerced*
(:meth:`~dataflywheel.features.encoder.Encoder.count_coerced`) and is encoded as missing; NaN
and null are plain missing values. Scaled outputs are clipped to +-:data:`Z_LIMIT`
(+-:data:`RAW_LIMIT` for unscaled numbers), so a huge finite input cannot overflow float32 into
inf and NaN model outputs.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import polars as pl

from dataflywheel.errors import ConfigError
from dataflywheel.features.encoder import Encoder

Z_LIMIT = 1e4
"""Scaled outputs (z-scores, or training ranges for minmax) are clipped to +-Z_LIMIT: further
out means nothing, and a float32 model holds the value, its square and their sums safely."""
RAW_LIMIT = 1e12
"""Unscaled numbers (method ``none``) are clipped to +-RAW_LIMIT, for the same reason."""


def as_floats(series: pl.Series) -> pl.Series:
    """``series`` as Float64 with unreadable cells, NaN and infinities as null."""
    s = series.cast(pl.Float64, strict=False)
    return s.to_frame().select(pl.when(pl.first().is_finite()).then(pl.first())).to_series()


def count_unreadable(series: pl.Series, parsed: pl.Series) -> int:
    """Cells present in ``series`` (not null, not blank text) that are null in ``parsed``."""
    present = series.is_not_null()
    if series.dtype == pl.String:
        present = present & (series.str.strip_chars() != "")
    return int((present & parsed.is_null()).sum())


def scaled(values: pl.Series, fill: float, offset: float, scale: float, limit: float) -> np.ndarray:
    """``clip((value or fill - offset) / scale, -limit, limit)`` as float32; null reads as missing."""
    x = values.cast(pl.Float64).to_numpy()
    x = np.where(np.isfinite(x), x, fill)
    with np.errstate(over="ignore"):
        x = (x - offset) / scale
    return np.clip(x, -limit, limit).astype(np.float32)


def stat_or(value: Any, default: float) -> float:
    """A statistic polars returned (None for an empty column, or not finite) as a float, else ``default``."""
    return default if value is None or not np.isfinite(value) else float(value)


def nonzero(value: Any) -> float:
    """``value`` as a float to divide by: 1.0 when it is zero, missing or not finite."""
    return float(value) if value and np.isfinite(value) else 1.0


class NumberEncoder(Encoder):
    """A number, missing filled with the train median, then z-scored, min-max scaled or kept."""

    name = "number"
    feature_type = "number"

    def __init__(self, method: Literal["zscore", "minmax", "none"] = "zscore") -> None:
        self.method = method

    @property
    def _state(self) -> tuple[str, ...]:  # type: ignore[override]
        return {"zscore": ("mean_", "std_", "fill_"), "minmax": ("min_", "max_", "fill_")}.get(
            self.method, ("fill_",)
        )

    def get_params(self) -> dict[str, Any]:
        return {"method": self.method}

    def fit(self, series: pl.Series) -> NumberEncoder:
        if self.method not in ("zscore", "minmax", "none"):
            raise ConfigError(
                f"unknown number encoding {self.method!r}", fix="use zscore, minmax or none"
            )
        s = as_floats(series)
        self.fill_ = stat_or(s.median(), 0.0)
        if self.method == "zscore":
            self.mean_ = stat_or(s.mean(), 0.0)
            self.std_ = nonzero(s.std(ddof=0))
        elif self.method == "minmax":
            self.min_ = stat_or(s.min(), 0.0)
            self.max_ = stat_or(s.max(), 1.0)
        return self

    def affine(self) -> tuple[float, float, float]:
        """``(fill, offset, scale)``: the output is ``(value or fill - offset) / scale``."""
        self._check_fitted()
        if self.method == "zscore":
            return self.fill_, self.mean_, self.std_
        if self.method == "minmax":
            return self.fill_, self.min_, nonzero(self.max_ - self.min_)
        return self.fill_, 0.0, 1.0

    def limit(self) -> float:
        """Outputs are clipped to ``[-limit, limit]`` (:data:`Z_LIMIT` or :data:`RAW_LIMIT`)."""
        return RAW_LIMIT if self.method == "none" else Z_LIMIT

    def transform(self, series: pl.Series) -> np.ndarray:
        self._check_fitted(series)
        return scaled(as_floats(series), *self.affine(), self.limit())

    def count_coerced(self, series: pl.Series) -> int:
        """Unreadable cells (``"abc"``) and infinities, both encoded as missing."""
        self._check_fitted(series)
        parsed = series.cast(pl.Float64, strict=False)
        return count_unreadable(series, parsed) + int(parsed.is_infinite().sum())
