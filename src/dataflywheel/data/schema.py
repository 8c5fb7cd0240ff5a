"""What a table's columns are: inferred types and the statistics later batches are checked against.

A :class:`Schema` is saved beside every dataset version as JSON, so it holds only plain values
(finite floats, strings). Category values are compared as strings everywhere; use
:func:`category_strings` so that ``1`` and ``1.0`` are the same category.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import polars as pl

from dataflywheel.config import FeatureType
from dataflywheel.errors import DataError, SchemaError

# A string column is a number (or datetime) column when this share of its values parse as one.
PARSE_SHARE = 0.95
# An integer target with at most this many distinct values is a class label.
MAX_TARGET_CLASSES = 20
# A string column is a category when it has at most max(MAX_CATEGORIES, CATEGORY_SHARE * rows)
# distinct values, none longer than MAX_CATEGORY_LENGTH characters.
MAX_CATEGORIES = 20
CATEGORY_SHARE = 0.05
MAX_CATEGORY_LENGTH = 64

SCHEMA_VERSION = 1


@dataclass
class ColumnSchema:
    name: str
    type: FeatureType
    dtype: str
    """polars dtype as read, ``str(dtype)``."""
    missing_rate: float
    """Share of nulls (and NaN for floats)."""
    n_unique: int = 0
    """Distinct non-missing values (a float column past 10,000 of them: an estimate, ~1 % off)."""
    min: float | None = None
    """number, and datetime as epoch seconds; statistics ignore missing and infinite values."""
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    categories: list[str] | None = None
    """category and binary: sorted observed values, as strings (see :func:`category_strings`)."""
    coercible_failures: int = 0
    """number columns read as strings: non-missing cells that do not parse as numbers."""


@dataclass
class Schema:
    columns: list[ColumnSchema]
    target: str | None = None
    n_rows: int = 0

    def column(self, name: str) -> ColumnSchema:
        for c in self.columns:
            if c.name == name:
                return c
        raise SchemaError(
            "no such column in the schema", where=name, fix=f"use one of {_few(self.names)}"
        )

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def features(self) -> list[ColumnSchema]:
        """Every column but the target."""
        return [c for c in self.columns if c.name != self.target]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SCHEMA_VERSION,
            "target": self.target,
            "n_rows": self.n_rows,
            "columns": [asdict(c) for c in self.columns],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schema:
        known = {f.name for f in fields(ColumnSchema)}
        try:
            columns = []
            for c in d["columns"]:
                unknown = set(c) - known
                if unknown:
                    raise TypeError(f"unknown column keys {sorted(unknown)}")
                columns.append(ColumnSchema(**c))
            return cls(columns=columns, target=d.get("target"), n_rows=int(d.get("n_rows", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(
                f"not a valid schema ({exc})", fix="re-create it from the data"
            ) from None

    def save(self, path: str | Path) -> None:
        """Write JSON atomically: a temporary file in the same folder, then ``os.replace``."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_dict(), fh, indent=2, ensure_ascii=False, allow_nan=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError("schema file not found", where=str(path)) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SchemaError(
                f"not valid JSON ({exc})", where=str(path), fix="re-create it from the data"
            ) from None
        try:
            return cls.from_dict(d)
        except SchemaError as exc:
            raise SchemaError(exc.message, where=str(path), fix=exc.fix) from None


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
            fix=f"set data.target to one of {_few(df.columns)}",
        )
    for name in overrides:
        if name not in df.columns:
            raise SchemaError(
                "a feature override names a column not in the data",
                where=name,
                fix=f"use one of {_few(df.columns)} in data.features",
            )
    distinct = _distinct_counts(df)
    columns = [_infer_column(df[c], df.height, c == target, overrides.get(c), distinct.get(c)) for c in df.columns]
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


EXACT_FLOAT_DISTINCT = 10_000


def _supported(dtype: pl.DataType) -> bool:
    return not (dtype.is_nested() or dtype == pl.Binary or dtype == pl.Object)


def _distinct_counts(df: pl.DataFrame) -> dict[str, int]:
    """Distinct non-missing values per column (NaN counts as missing), in parallel queries.

    Exact, except for a float column with more than ``EXACT_FLOAT_DISTINCT`` distinct values,
    which gets polars' HyperLogLog estimate (about 1 % off): no rule looks at a float column's
    count beyond "exactly 2", and hashing every float exactly was the slowest part of
    inferring a wide numeric table."""
    present = {name: pl.col(name).drop_nulls() for name, dtype in df.schema.items() if _supported(dtype)}
    floats = [name for name in present if df.schema[name].is_float()]
    for name in floats:
        present[name] = present[name].drop_nans()
    counts: dict[str, int] = {}
    if floats:
        counts = df.select(present[n].approx_n_unique().alias(n) for n in floats).row(0, named=True)
    exact = [name for name in present if counts.get(name, 0) <= EXACT_FLOAT_DISTINCT]
    if exact:
        counts |= df.select(present[n].n_unique().alias(n) for n in exact).row(0, named=True)
    return counts


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


def _few(names: list[str], k: int = 8) -> str:
    shown = ", ".join(names[:k])
    return shown + (f", ... ({len(names)} columns)" if len(names) > k else "")
