"""Inferring a :class:`~.columns.Schema` from a frame: each column's type by a few rules, and
the statistics later batches are checked against (integer and float columns in numpy blocks of
many columns at once, so a table of 100,000 columns takes seconds)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from dataflywheel.config import FeatureType
from dataflywheel.data.schema.columns import ColumnSchema, Schema, few_names
from dataflywheel.data.schema.values import category_strings, missing_mask, parse_datetimes, parse_numbers
from dataflywheel.errors import SchemaError

# A string column is a number (or datetime) column when this share of its values parse as one.
PARSE_SHARE = 0.95
# An integer target with at most this many distinct values is a class label.
MAX_TARGET_CLASSES = 20
# A string column is a category when it has at most max(MAX_CATEGORIES, CATEGORY_SHARE * rows)
# distinct values, none longer than MAX_CATEGORY_LENGTH characters.
MAX_CATEGORIES = 20
CATEGORY_SHARE = 0.05
MAX_CATEGORY_LENGTH = 64


def infer_schema(
    df: pl.DataFrame, target: str | None = None, overrides: dict[str, FeatureType] | None = None
) -> Schema:
    """Infer each column's type and statistics.

    Rules, first match wins (``overrides`` replace the rules for the columns they name):

    1. bool, or exactly 2 distinct non-missing values -> ``binary``;
    2. numeric dtype -> ``number``, except an integer *target* with <= 20 distinct values,
       which is ``category``;
    3. date/datetime dtype -> ``datetime``;
    4. string where >= 95% of non-missing values parse as numbers -> ``number``
       (the rest are counted in ``coercible_failures``);
    5. string where >= 95% parse as dates or datetimes -> ``datetime``;
    6. string (or categorical) with at most max(20, 5% of rows) distinct values, none longer
       than 64 characters -> ``category`` (an all-missing column is an empty category);
    7. any other string -> ``text``.

    Nested columns (lists, structs) and binary blobs raise :class:`SchemaError`: exclude or
    flatten them first. A missing ``target`` raises :class:`SchemaError` naming it.
    """
    overrides = dict(overrides or {})
    if target is not None and target not in df.columns:
        raise SchemaError(
            "target column not found in the data",
            where=target,
            fix=f"set data.target to one of {few_names(df.columns)}",
        )
    present = set(df.columns)
    for name in overrides:
        if name not in present:
            raise SchemaError(
                "a feature override names a column not in the data",
                where=name,
                fix=f"use one of {few_names(df.columns)} in data.features",
            )
    dtypes = df.schema  # built once: each ``df.schema`` call costs a pass over every column
    nulls = df.null_count().row(0, named=True)
    vectorised = [name for name, dtype in dtypes.items()
                  if _plain_numeric(dtype) and name != target and overrides.get(name, "number") == "number"]
    stats = _number_stats(df, vectorised)
    distinct = {name: st.n_unique for name, st in stats.items() if st.n_unique is not None}
    nans = {name: stats[name].n_missing - nulls[name] for name in vectorised if dtypes[name].is_float()}
    rest = [name for name, dtype in dtypes.items() if dtype.is_float() and name not in nans]
    if rest:
        nans |= df.select(pl.col(rest).is_nan().sum()).row(0, named=True)
    distinct |= _distinct_counts(df, [name for name in dtypes if name not in distinct], dtypes, nulls, nans)
    numeric = _numeric_columns(df, stats, dtypes, distinct, forced=set(overrides))
    columns = [numeric[name] if name in numeric
               else _infer_column(df.get_column(name), df.height, name == target, overrides.get(name),
                                  distinct.get(name))
               for name in dtypes]
    return Schema(columns=columns, target=target, n_rows=df.height)


def infer_task(col: ColumnSchema) -> str:
    """The learning task a target column poses: the registered task that claims its type
    (:attr:`Task.target_types`: binary, multiclass for a category, regression for a number)."""
    from dataflywheel.tasks import infer_task_name

    task = infer_task_name(col.type)
    if task is not None:
        return task
    raise SchemaError(
        f"a {col.type} column cannot be a target",
        where=col.name,
        fix="choose a number, category or binary column as data.target",
    )


EXACT_FLOAT_DISTINCT = 10_000


def _supported(dtype: pl.DataType) -> bool:
    return not (dtype.is_nested() or dtype == pl.Binary or dtype == pl.Object)


def _distinct_counts(
    df: pl.DataFrame, names: list[str], dtypes: pl.Schema, nulls: dict[str, int], nans: dict[str, int]
) -> dict[str, int]:
    """Distinct non-missing values per column of ``names`` (NaN counts as missing), given each
    column's null and (floats) NaN counts.

    Exact, except for a float column of a table with more than ``EXACT_FLOAT_DISTINCT`` rows
    whose values are that varied: it gets polars' HyperLogLog estimate (about 1 % off). No rule
    looks at a float column's count beyond "exactly 2", and hashing every float exactly was the
    slowest part of inferring a tall numeric table. One multi-column expression per kind of
    count, so the cost of building the query does not grow with the column count."""
    supported = [name for name in names if _supported(dtypes[name])]
    counts: dict[str, int] = {}
    exact = supported
    if df.height > EXACT_FLOAT_DISTINCT:
        floats = [name for name in supported if dtypes[name].is_float()]
        if floats:
            counts = df.select(pl.col(floats).drop_nulls().drop_nans().approx_n_unique()).row(0, named=True)
        exact = [name for name in supported if counts.get(name, 0) <= EXACT_FLOAT_DISTINCT]
    if exact:
        raw = df.select(pl.col(exact).n_unique()).row(0, named=True)  # null and NaN count as values here
        counts |= {name: raw[name] - (nulls[name] > 0) - (nans.get(name, 0) > 0) for name in exact}
    return counts


NUMERIC_BLOCK_CELLS = 1 << 22
"""Cells of number columns summarised per numpy block (32 MiB of float64)."""


@dataclass
class _NumberStats:
    n_missing: int
    """Nulls and NaN."""
    n_finite: int
    min: float
    max: float
    mean: float
    std: float
    n_unique: int | None
    """Distinct non-missing values; None when not counted here (see :func:`_number_stats`)."""


_BLOCK_DTYPES = frozenset({pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64,
                           pl.Float32, pl.Float64})


def _plain_numeric(dtype: pl.DataType) -> bool:
    """Integer and float columns (up to 64 bits): their statistics are computed for many columns
    at once. (A set of dtype classes: comparing polars dtypes one by one is slow.)"""
    return type(dtype) in _BLOCK_DTYPES


def _number_stats(df: pl.DataFrame, names: list[str]) -> dict[str, _NumberStats]:
    """Missing count and finite-value statistics of integer and float columns, in numpy blocks
    of many columns rather than one polars query per column."""
    out: dict[str, _NumberStats] = {}
    if not names or df.height == 0:
        return out
    step = max(1, NUMERIC_BLOCK_CELLS // df.height)
    count = df.height <= EXACT_FLOAT_DISTINCT  # a short table: distinct values by sorting each block
    for start in range(0, len(names), step):
        block = names[start:start + step]
        x = df[block].to_numpy(order="fortran").astype(np.float64, copy=False)  # nulls are NaN
        distinct = _sorted_distinct(x) if count else None
        missing = np.isnan(x).sum(axis=0)
        finite = np.isfinite(x)
        n_finite = finite.sum(axis=0)
        lo = np.where(finite, x, np.inf).min(axis=0)
        hi = np.where(finite, x, -np.inf).max(axis=0)
        some = n_finite > 0
        mean = np.divide(np.where(finite, x, 0.0).sum(axis=0), n_finite, out=np.zeros(len(block)), where=some)
        dev = np.where(finite, x - mean, 0.0)
        std = np.sqrt(np.divide((dev * dev).sum(axis=0), n_finite, out=np.zeros(len(block)), where=some))
        del x, finite, dev
        for j, name in enumerate(block):
            exact = max(abs(lo[j]), abs(hi[j])) < 2**53  # else ints may merge as floats
            n_unique = int(distinct[j]) if distinct is not None and exact else None
            out[name] = _NumberStats(int(missing[j]), int(n_finite[j]), float(lo[j]), float(hi[j]),
                                     float(mean[j]), float(std[j]), n_unique)
    return out


def _sorted_distinct(x: np.ndarray) -> np.ndarray:
    """Distinct non-NaN values per column of a 2-D float array (-0.0 equals 0.0, as in polars)."""
    xs = np.sort(x, axis=0)  # NaN sorts last
    present = ~np.isnan(xs)
    changes = (xs[1:] != xs[:-1]) & present[1:]
    counts: np.ndarray = present[:1].sum(axis=0) + changes.sum(axis=0)
    return counts


def _numeric_columns(
    df: pl.DataFrame, stats: dict[str, _NumberStats], dtypes: pl.Schema, distinct: dict[str, int],
    forced: set[str] = frozenset(),  # type: ignore[assignment]
) -> dict[str, ColumnSchema]:
    """The schema of the integer and float feature columns summarised in ``stats`` (those in
    ``forced`` are declared numbers): same rules and statistics as :func:`_infer_column` (a table
    with 100,000 such columns takes seconds); a two-valued column with an infinite value goes
    through that function instead."""
    out: dict[str, ColumnSchema] = {}
    binary: list[tuple[str, float, float]] = []
    n_rows = df.height
    names: dict[pl.DataType, str] = {}
    for name, st in stats.items():
        n_unique = int(distinct.get(name, 0))
        dtype = dtypes[name]
        if dtype not in names:
            names[dtype] = str(dtype)
        col = ColumnSchema(name=name, type="number", dtype=names[dtype], missing_rate=st.n_missing / n_rows,
                           n_unique=n_unique)
        if n_unique == 2 and name not in forced:
            if st.n_finite != n_rows - st.n_missing or max(abs(st.min), abs(st.max)) >= 2**53:
                # an infinity, or an integer a float64 cannot hold exactly
                out[name] = _infer_column(df.get_column(name), n_rows, False, None, n_unique)
                continue
            col.type = "binary"
            binary.append((name, st.min, st.max))
        elif st.n_finite:
            col.min, col.max, col.mean = st.min, st.max, st.mean
            col.std = st.std if math.isfinite(st.std) else 0.0
        out[name] = col
    for name, labels in _pair_strings(binary, dtypes).items():
        out[name].categories = labels
    return out


def _pair_strings(pairs: list[tuple[str, float, float]], dtypes: pl.Schema) -> dict[str, list[str]]:
    """The two values of each two-valued number column as :func:`category_strings` writes them:
    integers (and floats that are whole numbers) as integers, other floats as polars prints them."""
    out: dict[str, list[str]] = {}
    fractional: list[tuple[str, float, float]] = []
    for name, lo, hi in pairs:
        whole = dtypes[name].is_integer() or (lo.is_integer() and hi.is_integer() and max(abs(lo), abs(hi)) < 2**53)
        if whole:
            out[name] = [str(int(lo)), str(int(hi))]
        else:
            fractional.append((name, lo, hi))
    by_dtype: dict[pl.DataType, list[tuple[str, float, float]]] = {}
    for item in fractional:
        by_dtype.setdefault(dtypes[item[0]], []).append(item)
    for dtype, items in by_dtype.items():  # Float32 prints as Float32, not as its Float64 value
        text = pl.Series([v for _, lo, hi in items for v in (lo, hi)], dtype=pl.Float64).cast(dtype).cast(pl.String)
        for i, (name, _lo, _hi) in enumerate(items):
            out[name] = [text[2 * i], text[2 * i + 1]]
    return out


def _infer_column(
    s: pl.Series, n_rows: int, is_target: bool, forced: FeatureType | None, n_unique: int | None = None
) -> ColumnSchema:
    dtype = s.dtype
    if not _supported(dtype):
        raise SchemaError(
            f"unsupported column dtype {dtype}",
            where=s.name,
            fix="exclude it (data.exclude) or flatten it",
        )
    missing = missing_mask(s)
    n_missing = int(missing.sum())
    present = s.filter(~missing)
    if dtype in (pl.Categorical, pl.Enum):
        present = present.cast(pl.String)
    col = ColumnSchema(
        name=s.name,
        type="text",
        dtype=str(dtype),
        missing_rate=n_missing / n_rows if n_rows else 0.0,
        n_unique=present.n_unique() if n_unique is None else int(n_unique),
    )
    col.type = forced or _rule_type(present, n_rows, is_target, col.n_unique)
    _describe(col, present)
    return col


def _rule_type(present: pl.Series, n_rows: int, is_target: bool, n_unique: int) -> FeatureType:
    dtype = present.dtype
    if dtype == pl.Boolean or n_unique == 2:
        return "binary"
    if dtype.is_numeric():
        return (
            "category"
            if is_target and dtype.is_integer() and n_unique <= MAX_TARGET_CLASSES
            else "number"
        )
    if dtype in (pl.Date, pl.Datetime):
        return "datetime"
    present = present.cast(pl.String)
    n = present.len()
    if n and _parses(parse_numbers(present), n):
        return "number"
    if n and (dt := parse_datetimes(present)) is not None and _parses(dt, n):
        return "datetime"
    short = n == 0 or int(present.str.len_chars().max() or 0) <= MAX_CATEGORY_LENGTH  # type: ignore[arg-type]
    if short and n_unique <= max(MAX_CATEGORIES, CATEGORY_SHARE * n_rows):
        return "category"
    return "text"


def _parses(parsed: pl.Series, n: int) -> bool:
    return parsed.null_count() == 0 or (n - parsed.null_count()) / n >= PARSE_SHARE


def _describe(col: ColumnSchema, present: pl.Series) -> None:
    """Fill the statistics ``col.type`` calls for from the non-missing values."""
    if col.type in ("category", "binary"):
        values = present.unique().sort()
        col.categories = category_strings(values).to_list()
        return
    if col.type == "number":
        values = present
        if values.dtype == pl.Boolean:
            values = values.cast(pl.Float64)
        elif not values.dtype.is_numeric():
            values = parse_numbers(values.cast(pl.String))
            col.coercible_failures = values.null_count()
        _set_stats(col, values.drop_nulls().cast(pl.Float64), with_moments=True)
    elif col.type == "datetime":
        values = present
        if values.dtype not in (pl.Date, pl.Datetime):
            parsed = parse_datetimes(values.cast(pl.String))
            values = parsed if parsed is not None else pl.Series(values.name, [], pl.Datetime)
        _set_stats(
            col, values.drop_nulls().dt.epoch("ms").cast(pl.Float64) / 1000, with_moments=False
        )


def _set_stats(col: ColumnSchema, values: pl.Series, *, with_moments: bool) -> None:
    finite = values.filter(values.is_finite())
    if finite.len() == 0:
        return
    col.min = float(finite.min())  # type: ignore[arg-type]
    col.max = float(finite.max())  # type: ignore[arg-type]
    if with_moments:
        col.mean = float(finite.mean())  # type: ignore[arg-type]
        std = finite.std(ddof=0)
        col.std = float(std) if std is not None and math.isfinite(std) else 0.0  # type: ignore[arg-type]
