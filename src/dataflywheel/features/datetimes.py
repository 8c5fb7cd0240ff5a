"""Timestamps as z-scored epoch seconds, read from temporal columns or text in a learned format.

Like numbers, an unreadable cell (``"yesterday"``) counts as coerced and is encoded as missing.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, ClassVar

import numpy as np
import polars as pl

from dataflywheel.features.encoder import Encoder
from dataflywheel.features.numbers import Z_LIMIT, count_unreadable, nonzero, scaled, stat_or


def _datetime_formats() -> list[str]:
    """The formats polars infers (day-first and year-first dates, optional time and offset)."""
    dates = ["%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%d-%m-%Y", "%d/%m/%Y", "%d.%m.%Y"]
    formats: list[str] = []
    for date in dates:
        formats.append(date)
        for sep in ("T", " "):
            formats += [f"{date}{sep}%H:%M:%S%.f", f"{date}{sep}%H:%M:%S%.f%#z", f"{date}{sep}%H:%M"]
    return formats


DATETIME_FORMATS = _datetime_formats()
"""Formats a datetime encoder learns from (first best wins), and the per-cell fallback order."""
FORMAT_SAMPLE = 1000
"""Distinct training strings a datetime format is chosen on."""


def _epoch_seconds(series: pl.Series, fmt: str | None) -> pl.Series:
    """Epoch seconds (Float64), null where missing or unreadable; never raises.

    Text is read with ``fmt``; without one each cell is read by the first of
    :data:`DATETIME_FORMATS` that fits it, so a cell's value never depends on its neighbours.
    """
    s = series
    if s.dtype == pl.String:
        s = s.str.strip_chars()
        formats = [fmt] if fmt is not None else DATETIME_FORMATS
        ms = s.to_frame("s").select(
            pl.coalesce([pl.col("s").str.to_datetime(f, strict=False).dt.timestamp("ms") for f in formats])
        ).to_series()
        return ms.cast(pl.Float64) / 1000.0
    if s.dtype == pl.Null:
        return pl.Series(s.name, [None] * s.len(), dtype=pl.Float64)
    if not isinstance(s.dtype, pl.Datetime):
        s = s.cast(pl.Datetime, strict=False)
    return s.dt.timestamp("ms").cast(pl.Float64) / 1000.0


_DATE_CHARS = re.compile(r"^[0-9 ./:T+\-Z]+$")


def readable_datetime(value: str) -> bool:
    """Whether one text reads as a timestamp in one of :data:`DATETIME_FORMATS` (as the
    encoder reads it). ISO 8601 text is checked in microseconds (``datetime.fromisoformat``);
    text with other characters than digits, separators, ``T`` and ``Z`` is refused at once;
    the rest (``01/05/2024``) is read by polars, as the encoder does."""
    text = value.strip()
    if not text or not _DATE_CHARS.match(text):
        return False
    iso = len(text) >= 10 and text[4] == "-" and text[7] == "-"  # YYYY-MM-DD, and a time as HH:MM...
    if iso and (len(text) == 10 or (len(text) >= 16 and text[13] == ":")):
        try:
            datetime.fromisoformat(text)
            return True
        except ValueError:
            pass
    return _epoch_seconds(pl.Series("s", [text], dtype=pl.String), None)[0] is not None


def learn_datetime_format(series: pl.Series) -> str | None:
    """The format of :data:`DATETIME_FORMATS` reading most of a text column's (sampled) values;
    None for a non-text column or when none reads any."""
    if series.dtype != pl.String:
        return None
    sample = series.drop_nulls().str.strip_chars().unique(maintain_order=True).head(FORMAT_SAMPLE)
    frame = sample.to_frame("s")
    counts = frame.select(
        pl.col("s").str.to_datetime(f, strict=False).is_not_null().sum().alias(str(i))
        for i, f in enumerate(DATETIME_FORMATS)
    ).row(0)
    best = max(range(len(counts)), key=lambda i: (counts[i], -i))
    return DATETIME_FORMATS[best] if counts[best] else None


class DatetimeEncoder(Encoder):
    """A timestamp as z-scored epoch seconds; missing or unreadable filled with the train median.

    ``format_`` is the text format learned at fit (None when the training column was already
    temporal, or for an encoder saved before it existed: then each cell is read by the first of
    :data:`DATETIME_FORMATS` that fits it).
    """

    name = "datetime"
    feature_type = "datetime"
    _state = ("mean_", "std_", "fill_")
    _optional_state: ClassVar[dict[str, Any]] = {"format_": None}

    def fit(self, series: pl.Series) -> DatetimeEncoder:
        self.format_: str | None = learn_datetime_format(series)
        s = _epoch_seconds(series, self.format_)
        self.mean_ = stat_or(s.mean(), 0.0)
        self.std_ = nonzero(s.std(ddof=0))
        self.fill_ = stat_or(s.median(), self.mean_)
        return self

    def encode_coerced(self, series: pl.Series) -> tuple[np.ndarray, int]:
        """``(transform(series), count_coerced(series))``, parsing once."""
        self._check_fitted(series)
        seconds = _epoch_seconds(series, self.__dict__.get("format_"))
        out = scaled(seconds, self.fill_, self.mean_, self.std_, Z_LIMIT)
        return out, count_unreadable(series, seconds)

    def transform(self, series: pl.Series) -> np.ndarray:
        return self.encode_coerced(series)[0]

    def count_coerced(self, series: pl.Series) -> int:
        return self.encode_coerced(series)[1]
