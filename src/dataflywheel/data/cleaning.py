"""Row- and cell-level cleaning: type coercion, exact duplicates, missing values, outliers.

Everything here is vectorised polars: no row loops and no round trip through numpy or pandas
for a whole frame. :class:`Imputer` and :class:`Clipper` follow the scikit-learn estimator
contract (``__init__`` stores parameters, ``fit`` returns ``self``, learned state ends in
``_``, ``transform`` does not modify its input), so the processing stage can fit them on the
train split and apply the same statistics to every split.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from dataflywheel.data.schema import category_strings
from dataflywheel.errors import ConfigError, DataError, NotFittedError, SchemaError

if TYPE_CHECKING:
    from dataflywheel.config import MissingConfig
    from dataflywheel.data.schema import Schema

_STRING_TYPES = ("category", "binary", "text")


def _cast(col: str, kind: str, dtype: pl.DataType) -> pl.Expr | None:
    """Expression casting ``col`` to the dtype for schema type ``kind``; None when it already is.

    A cell present before and missing after the cast could not be read as ``kind``.
    """
    c = pl.col(col)
    if kind == "number":
        if dtype == pl.Float64:
            return None
        if dtype == pl.String:
            return c.str.strip_chars().cast(pl.Float64, strict=False)
        return c.cast(pl.Float64, strict=False)
    if kind in _STRING_TYPES:
        return (
            None if dtype == pl.String else c.map_batches(category_strings, return_dtype=pl.String)
        )
    if kind == "datetime":
        if isinstance(dtype, pl.Datetime):
            return None
        if dtype == pl.String:
            # Each cell is read by the first known format that fits it: never raises (polars'
            # own inference fails on a column of unreadable text) and never depends on the batch.
            from dataflywheel.features.encoders import DATETIME_FORMATS

            text = c.str.strip_chars()
            ms = pl.coalesce([text.str.to_datetime(f, strict=False).dt.timestamp("ms") for f in DATETIME_FORMATS])
            return pl.from_epoch(ms, time_unit="ms")
        return c.cast(pl.Datetime, strict=False)
    raise SchemaError(f"unknown column type {kind!r}", where=f"column '{col}'")


def coerce_types(
    df: pl.DataFrame, schema: Schema, on_error: Literal["coerce", "reject"], where: str
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Cast every schema column present in ``df`` to its schema type.

    number -> Float64 (NaN becomes missing), category/binary/text -> Utf8 (as
    :func:`~dataflywheel.data.schema.category_strings`, so 1.0 reads "1"), datetime -> Datetime.
    Returns the new frame and, per column, the cells that were present but could not be read
    (they become missing). With ``on_error="reject"`` the first such cell raises
    :class:`DataError` naming its 1-based data row (header excluded), column and value.
    Columns not in the schema are left as they are.
    """
    casts: dict[str, pl.Expr] = {}
    final: dict[str, pl.Expr] = {}
    dtypes = df.schema  # once: ``df.schema`` and ``df.columns`` each cost a pass over the columns
    for col in schema.columns:
        dtype = dtypes.get(col.name)
        if dtype is None:
            continue
        cast = _cast(col.name, col.type, dtype)
        if cast is not None and col.type in ("number", "datetime") and not dtype.is_numeric():
            casts[col.name] = cast
        expr = cast if cast is not None else pl.col(col.name)
        if col.type == "number":
            final[col.name] = expr.fill_nan(None)
        elif cast is not None:
            final[col.name] = cast
    failures: dict[str, int] = {}
    if casts:
        lost = {n: pl.col(n).is_not_null() & e.is_null() for n, e in casts.items()}
        counts = df.select(e.sum().alias(n) for n, e in lost.items()).row(0, named=True)
        failures = {n: int(k) for n, k in counts.items() if k}
        if failures and on_error == "reject":
            name = next(iter(failures))
            bad = int(df.select(lost[name].arg_max()).item())
            kind = schema.column(name).type
            raise DataError(
                f"column '{name}' has {df[name][bad]!r}, which is not a {kind}",
                where=f"{where} row {bad + 1}",
                fix="clean it or set data.processing.coerce: coerce",
            )
    return (df.with_columns(e.alias(n) for n, e in final.items()) if final else df), failures


def unique_rows(df: pl.DataFrame) -> pl.Series | None:
    """Mask of the rows to keep when dropping exact duplicates (missing equals missing): each
    row's first occurrence. None when there is no duplicate.

    Row hashes find the candidates cheaply; only rows sharing a hash are compared exactly.
    """
    if df.is_empty() or not df.columns:
        return None
    repeated = df.hash_rows().is_duplicated()
    if not repeated.any():
        return None
    index = "\0row"
    candidates = df.with_row_index(index).filter(repeated)
    first = candidates.unique(subset=df.columns, keep="first", maintain_order=True)[index]
    keep = ~repeated | pl.int_range(df.height, dtype=pl.UInt32, eager=True).is_in(first.implode())
    return None if keep.all() else keep


def drop_duplicates(df: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Drop exact duplicate rows (missing equals missing), keeping the first; order is kept."""
    keep = unique_rows(df)
    if keep is None:
        return df, 0
    out = df.filter(keep)
    return out, df.height - out.height


def _check_fitted(obj: object, attr: str) -> None:
    if not hasattr(obj, attr):
        raise NotFittedError(
            f"{type(obj).__name__} is not fitted; call fit on the train split first"
        )


def _constant_for(kind: str, constant: float | str, where: str) -> Any:
    if kind == "text":
        return ""
    if kind == "number":
        try:
            return float(constant)
        except ValueError:
            raise ConfigError(
                f"number columns need a numeric constant (got {constant!r})",
                where=where,
                fix="set a number, or a per-type strategy other than constant",
            ) from None
    if kind == "datetime":
        if isinstance(constant, str):
            try:
                return datetime.fromisoformat(constant)
            except ValueError:
                raise ConfigError(
                    f"datetime columns need an ISO date or epoch seconds (got {constant!r})",
                    where=where,
                ) from None
        return datetime.fromtimestamp(float(constant), tz=UTC).replace(tzinfo=None)
    return str(constant)


def _most_frequent(s: pl.Series) -> Any:
    """Most common non-missing value; ties go to the smallest, so the result is deterministic."""
    counts = s.drop_nulls().value_counts(name="n")
    if counts.is_empty():
        return None
    return counts.sort(["n", s.name], descending=[True, False])[s.name][0]


FILL_GROUP_BYTES = 64 << 20
"""Most bytes of columns :meth:`Imputer.transform_owned` replaces in one step (by the frame's
average column size)."""


class Imputer:
    """Fill missing cells per feature type, with statistics learned on one frame (the train split).

    The strategy for each column comes from ``missing`` by the column's schema type; ``drop``
    removes rows missing that column instead, but only for ``inputs``, the columns the model
    reads (None: every column); a ``drop`` column outside them keeps its missing cells. The
    target column is never touched. A statistic that cannot be computed (a column entirely
    missing in the fitted frame) falls back to ``missing.constant``.
    """

    def __init__(
        self,
        schema: Schema,
        missing: MissingConfig,
        target: str | None = None,
        inputs: Collection[str] | None = None,
    ) -> None:
        self.schema = schema
        self.missing = missing
        self.target = target
        self.inputs = None if inputs is None else set(inputs)

    def fit(self, df: pl.DataFrame) -> Imputer:
        present = set(df.columns)
        strategies = {
            col.name: (col.type, getattr(self.missing, col.type))
            for col in self.schema.columns
            if col.name != self.target and col.name in present
        }
        # means and medians of all columns in one parallel pass (one expression per statistic)
        moments = {"mean": pl.Expr.mean, "median": pl.Expr.median}
        exprs = []
        for how, stat in moments.items():
            names = [n for n, (_, h) in strategies.items() if h == how]
            if names:
                exprs.append(stat(pl.col(names)))
        stats = df.select(exprs).row(0, named=True) if exprs else {}
        fill: dict[str, Any] = {}
        drop: list[str] = []
        for name, (kind, how) in strategies.items():
            if how == "drop":
                if self.inputs is None or name in self.inputs:
                    drop.append(name)
                continue  # a column the model does not read is left as it is
            value = stats.get(name)
            if how == "most_frequent":
                value = _most_frequent(df[name])
            if value is None:
                value = _constant_for(
                    kind, self.missing.constant, f"data.processing.missing.{kind}"
                )
            fill[name] = value
        self.fill_: dict[str, Any] = fill
        self.drop_columns_: list[str] = drop
        return self

    def drop_counts(self, df: pl.DataFrame) -> dict[str, int]:
        """Per ``drop`` column, the rows of ``df`` that :meth:`transform` removes for missing it
        (a row missing two such columns counts in both)."""
        _check_fitted(self, "fill_")
        if not self.drop_columns_:
            return {}
        counts = df.select(pl.col(self.drop_columns_).null_count()).row(0, named=True)
        return {name: int(n) for name, n in counts.items() if n}

    def transform(self, df: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """Return (filled frame, rows dropped because a ``drop`` column was missing)."""
        _check_fitted(self, "fill_")
        self._check_columns(df, [*self.fill_, *self.drop_columns_])
        out = df
        dropped = 0
        if self.drop_columns_:
            out = df.drop_nulls(subset=self.drop_columns_)
            dropped = df.height - out.height
        fills = self._fills(out)
        return (out.with_columns(fills) if fills else out), dropped

    @staticmethod
    def _check_columns(df: pl.DataFrame, names: list[str]) -> None:
        present = set(df.columns)
        absent = [c for c in names if c not in present]
        if absent:
            raise SchemaError(
                f"column '{absent[0]}' is missing",
                where="imputer",
                fix="pass the same columns it was fitted on",
            )

    def _fills(self, df: pl.DataFrame) -> list[pl.Expr]:
        """The fill expressions of the columns of ``df`` that have missing cells."""
        if not self.fill_:
            return []
        dtypes = df.schema
        nulls = df.select(pl.col(list(self.fill_)).null_count()).row(0, named=True)
        return [pl.col(name).fill_null(pl.lit(value, dtype=dtypes[name]))
                for name, value in self.fill_.items() if nulls[name]]

    def transform_owned(self, frames: list[pl.DataFrame]) -> tuple[pl.DataFrame, int]:
        """:meth:`transform` of ``frames.pop()``, the caller's only reference to that frame:
        columns are filled a group at a time (at most ``FILL_GROUP_BYTES`` of them, or one
        column) and each replaced group is freed at once, so the peak is about one group more
        than the frame rather than two copies of it, and a wide frame is not rebuilt once per
        column."""
        _check_fitted(self, "fill_")
        if self.drop_columns_:
            return self.transform(frames.pop())
        out = frames.pop()
        self._check_columns(out, list(self.fill_))
        fills = self._fills(out)
        per_column = max(1, int(out.estimated_size()) // max(1, out.width))
        group = max(1, FILL_GROUP_BYTES // per_column)
        for start in range(0, len(fills), group):
            out = out.with_columns(fills[start:start + group])
        return out, 0


class Clipper:
    """Clip number columns to quantiles learned on one frame (the train split)."""

    def __init__(self, columns: list[str], quantiles: tuple[float, float]) -> None:
        self.columns = columns
        self.quantiles = quantiles

    def fit(self, df: pl.DataFrame) -> Clipper:
        low, high = self.quantiles
        bounds = df.select(
            *(pl.col(c).quantile(low, "linear").alias(f"{c}\0lo") for c in self.columns),
            *(pl.col(c).quantile(high, "linear").alias(f"{c}\0hi") for c in self.columns),
        ).row(0, named=True)
        self.bounds_: dict[str, tuple[float | None, float | None]] = {
            c: (bounds[f"{c}\0lo"], bounds[f"{c}\0hi"]) for c in self.columns
        }
        return self

    def transform(self, df: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """Return (clipped frame, number of cells that were outside their bounds)."""
        _check_fitted(self, "bounds_")
        active = {c: b for c, b in self.bounds_.items() if b[0] is not None}
        if not active:
            return df, 0
        outside = df.select(
            pl.sum_horizontal(
                ((pl.col(c) < lo) | (pl.col(c) > hi)).sum() for c, (lo, hi) in active.items()
            )
        ).item()
        out = df.with_columns(pl.col(c).clip(lo, hi) for c, (lo, hi) in active.items())
        return out, int(outside or 0)
