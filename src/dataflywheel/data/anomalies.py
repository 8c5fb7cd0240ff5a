"""Check a new batch of data against the schema of the data a model was trained on.

Each finding is an :class:`Anomaly` of one kind; the :class:`~dataflywheel.config.AnomalyPolicy`
says whether that kind warns or fails. The checks are vectorised polars expressions, so a
large batch costs about as much as reading it.

Kinds: ``missing_column``, ``extra_column``, ``type_change`` (a number column now holds values
that are not numbers, more often than in the schema's data; a datetime column holds values that
are not dates), ``out_of_range`` (numbers outside the schema's [min, max]), ``unseen_category``
and ``missing_jump`` (missing rate rose by more than ``missing_jump_threshold``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import polars as pl

from dataflywheel.config import AnomalyKind, AnomalyPolicy
from dataflywheel.data.schema import (
    PARSE_SHARE,
    ColumnSchema,
    Schema,
    category_strings,
    known_categories,
    missing_mask,
    parse_datetimes,
    parse_numbers,
    unseen_mask,
)

Severity = Literal["warn", "fail"]

MAX_EXAMPLES = 5


@dataclass
class Anomaly:
    kind: str
    column: str | None
    detail: str
    severity: Severity


@dataclass
class ValidationReport:
    anomalies: list[Anomaly]
    n_rows: int

    @property
    def failed(self) -> bool:
        """True when any anomaly's severity is ``fail``."""
        return any(a.severity == "fail" for a in self.anomalies)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_rows": self.n_rows,
            "failed": self.failed,
            "anomalies": [asdict(a) for a in self.anomalies],
        }

    def summary(self) -> str:
        """A readable report: a headline, then one line per anomaly, failures first."""
        if not self.anomalies:
            return f"{self.n_rows} rows: no anomalies"
        fails = sum(a.severity == "fail" for a in self.anomalies)
        head = (
            f"{self.n_rows} rows: {len(self.anomalies)} anomalies "
            f"({fails} fail, {len(self.anomalies) - fails} warn)"
        )
        ordered = sorted(self.anomalies, key=lambda a: a.severity != "fail")
        lines = [
            f"  {a.severity.upper():4}  {a.kind}  {a.column or '-'}: {a.detail}" for a in ordered
        ]
        return "\n".join([head, *lines])


def validate_batch(
    df: pl.DataFrame,
    schema: Schema,
    policy: AnomalyPolicy | None = None,
    *,
    require_target: bool = True,
    expected: Collection[str] = (),
    categories: Mapping[str, Sequence[str]] | None = None,
) -> ValidationReport:
    """Compare ``df`` with ``schema``; never raises for bad data, it reports it.

    ``require_target=False`` accepts a batch without the target column (a batch to be scored).
    ``expected`` names columns that are not in the schema but belong in a batch (the excluded
    ones, e.g. an id): they are not extra columns. ``categories`` gives, per column, the values
    a model knows (those of the train split, see :func:`train_categories`); a value outside
    them is an unseen category. Columns it does not name use the schema's categories.
    """
    policy = policy or AnomalyPolicy()
    found: list[Anomaly] = []
    categories = categories or {}
    columns = set(df.columns)

    def add(kind: AnomalyKind, column: str | None, detail: str) -> None:
        found.append(Anomaly(kind, column, detail, getattr(policy, kind)))

    for col in schema.columns:
        if col.name not in columns:
            if require_target or col.name != schema.target:
                add("missing_column", col.name, f"column is missing (expected {col.type})")
            continue
        s = df[col.name]
        missing = missing_mask(s)
        present = s.filter(~missing)
        for kind, detail in _check_values(col, present, schema.n_rows, categories.get(col.name)):
            add(kind, col.name, detail)
        if df.height:
            rate = int(missing.sum()) / df.height
            if rate - col.missing_rate > policy.missing_jump_threshold:
                add(
                    "missing_jump",
                    col.name,
                    f"missing rate rose from {col.missing_rate:.1%} to {rate:.1%}",
                )
    known = set(schema.names) | set(expected)
    for name in df.columns:
        if name not in known:
            add("extra_column", name, f"column is not in the schema ({df[name].dtype})")
    return ValidationReport(anomalies=found, n_rows=df.height)


def train_categories(train: pl.DataFrame, schema: Schema) -> dict[str, list[str]]:
    """Per category or binary feature of ``schema`` in ``train`` (a train split), the values its
    encoder learns: what "seen in training" means for a model trained on that split."""
    present = set(train.columns)
    names = [c.name for c in schema.features if c.type in ("category", "binary") and c.name in present]
    return {name: known_categories(train.get_column(name)) for name in names}


def _check_values(
    col: ColumnSchema, present: pl.Series, n_rows: int, known: Sequence[str] | None = None
) -> list[tuple[AnomalyKind, str]]:
    if present.len() == 0:
        return []
    if col.type == "number":
        return _check_number(col, present, n_rows)
    known = col.categories if known is None else known
    if col.type in ("category", "binary") and known is not None:
        unseen = category_strings(present.filter(unseen_mask(present, known)))
        if unseen.len():
            return [
                (
                    "unseen_category",
                    f"{unseen.len()} values not seen in training (e.g. {_examples(unseen)})",
                )
            ]
    if col.type == "datetime":
        return _check_datetime(present)
    return []


def _check_number(
    col: ColumnSchema, present: pl.Series, n_rows: int
) -> list[tuple[AnomalyKind, str]]:
    out: list[tuple[AnomalyKind, str]] = []
    dtype = present.dtype
    if dtype.is_numeric() or dtype == pl.Boolean:
        values = present.cast(pl.Float64)
    elif dtype == pl.String or dtype in (pl.Categorical, pl.Enum):
        text = present.cast(pl.String)
        parsed = parse_numbers(text)
        bad = parsed.is_null()
        n_bad = int(bad.sum())
        if n_bad / text.len() > _failure_share(col, n_rows):
            out.append(
                (
                    "type_change",
                    f"{n_bad} of {text.len()} values are not numbers"
                    f" (e.g. {_examples(text.filter(bad))})",
                )
            )
        values = parsed.drop_nulls()
    else:
        return [("type_change", f"number column is now {dtype}")]
    if col.min is not None and col.max is not None:
        outside = values.filter((values < col.min) | (values > col.max))
        if outside.len():
            seen = f"{float(outside.min()):g} .. {float(outside.max()):g}"  # type: ignore[arg-type]
            out.append(
                (
                    "out_of_range",
                    f"{outside.len()} values outside [{col.min:g}, {col.max:g}] (seen {seen})",
                )
            )
    return out


def _check_datetime(present: pl.Series) -> list[tuple[AnomalyKind, str]]:
    if present.dtype in (pl.Date, pl.Datetime):
        return []
    if present.dtype != pl.String:
        return [("type_change", f"datetime column is now {present.dtype}")]
    parsed = parse_datetimes(present)
    bad = present if parsed is None else present.filter(parsed.is_null())
    if bad.len() / present.len() > 1 - PARSE_SHARE:
        return [
            (
                "type_change",
                f"{bad.len()} of {present.len()} values are not dates (e.g. {_examples(bad)})",
            )
        ]
    return []


def _failure_share(col: ColumnSchema, n_rows: int) -> float:
    """Share of the schema data's non-missing values that were not numbers."""
    n_present = (1 - col.missing_rate) * n_rows
    return col.coercible_failures / n_present if n_present > 0 else 0.0


def _examples(s: pl.Series) -> str:
    values = s.cast(pl.String).unique(maintain_order=True).head(MAX_EXAMPLES).to_list()
    return ", ".join(repr(v if len(v) <= 40 else v[:37] + "...") for v in values)
