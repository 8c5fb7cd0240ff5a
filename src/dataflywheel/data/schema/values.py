"""How cells are read as values: category strings, missing cells, and numbers and datetimes parsed
from strings. Category values are compared as strings everywhere; use :func:`category_strings`
so that ``1`` and ``1.0`` are the same category."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl


def category_strings(s: pl.Series) -> pl.Series:
    """Values as category strings: floats that are all whole numbers print as integers."""
    if s.dtype.is_float():
        finite = s.filter(s.is_finite())
        if finite.len() and bool((finite == finite.round(0)).all()) and finite.abs().max() < 2**53:  # type: ignore[operator]
            s = s.cast(pl.Int64, strict=False).cast(pl.String)
            return s
    if s.dtype.is_temporal():
        return s.dt.to_string()
    return s.cast(pl.String)


def known_categories(s: pl.Series) -> list[str]:
    """The sorted distinct present values of ``s`` as category strings: what a category encoder
    fitted on ``s`` knows."""
    present = s.filter(~missing_mask(s))
    return category_strings(present).unique().sort().to_list()


def unseen_mask(s: pl.Series, known: Sequence[str]) -> pl.Series:
    """True where a present value of ``s`` (as a category string) is not among ``known``: the
    one definition of an unseen category, shared by batch validation and drift monitoring."""
    return ~missing_mask(s) & ~category_strings(s).is_in(list(known)).fill_null(True)


def parse_numbers(s: pl.Series) -> pl.Series:
    """A string column as Float64; cells that do not parse become null."""
    return s.str.strip_chars().cast(pl.Float64, strict=False)


def parse_datetimes(s: pl.Series) -> pl.Series | None:
    """A string column as Datetime (format inferred); None when no format fits."""
    try:
        return s.str.strip_chars().str.to_datetime(strict=False)
    except pl.exceptions.PolarsError:
        return None


def missing_mask(s: pl.Series) -> pl.Series:
    """True where a cell is missing: null, or NaN in a float column."""
    mask = s.is_null()
    if s.dtype.is_float():
        mask = mask | s.is_nan().fill_null(False)
    return mask
