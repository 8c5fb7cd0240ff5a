"""What a :class:`~dataflywheel.features.preprocessor.Preprocessor` fills: the
:class:`EncodedBatch`, and the plan that lays each fitted encoder's output into its ``numeric``
or ``categorical`` block (plain number columns scaled together in one NumPy pass)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from dataflywheel.errors import SchemaError
from dataflywheel.features.batch_names import text_names
from dataflywheel.features.encoders import BinaryEncoder, CategoryEncoder, DatetimeEncoder, Encoder, NumberEncoder
from dataflywheel.features.ragged import Ragged


@dataclass
class EncodedBatch:
    numeric: np.ndarray
    """float32 (n, n_numeric)"""
    categorical: np.ndarray
    """int64 (n, n_categorical)"""
    unknown: dict[str, int]
    """Cells per feature holding a category unseen at fit time (features with none left out)."""
    texts: dict[str, Ragged] = field(default_factory=dict)
    """Token ids (no padding) per text column, in the preprocessor's order (empty without one)."""
    truncated: dict[str, int] = field(default_factory=dict)
    """Texts per text column cut to its max_length (columns with none left out)."""
    extra: dict[str, Ragged] = field(default_factory=dict)
    """Further ragged inputs by batch name (a chat encoder's ``labels``)."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Rows per text column left out of the loss for being too long (a chat encoder's
    ``truncate: reject``; columns with none left out)."""
    coerced: dict[str, int] = field(default_factory=dict)
    """Cells per number or datetime feature that could not be read ("abc", "yesterday") or were
    infinite, and were encoded as missing (features with none left out)."""

    @property
    def tokens(self) -> Ragged | None:
        """The first text column's token ids, or None without a text column."""
        return next(iter(self.texts.values()), None)

    @property
    def inputs(self) -> dict[str, np.ndarray | Ragged]:
        """The encoded rows by batch name (:mod:`~dataflywheel.features.batch`): ``numeric``,
        ``categorical``, per text column its ragged token ids (``tokens``, then ``tokens_1``,
        ...; padded per mini-batch), then :attr:`extra`."""
        named: dict[str, np.ndarray | Ragged] = {"numeric": self.numeric, "categorical": self.categorical}
        for i, ids in enumerate(self.texts.values()):
            named[text_names(i)[0]] = ids
        named.update(self.extra)
        return named


def missing_column(col: str) -> SchemaError:
    return SchemaError(
        "input column is missing",
        where=f"column '{col}'",
        fix="send every feature the model was trained on",
    )


def encode_column(enc: Encoder, series: pl.Series, vocabulary: bool) -> tuple[np.ndarray, int, int]:
    """``(encoded, unknown cells, unreadable cells)`` of one column, reading it once where the
    encoder can: a vocabulary encoder's ``encode``, a datetime encoder's ``encode_coerced``;
    a plugin that overrides ``transform`` alone is used as it is."""
    if vocabulary:
        out, n_unknown = enc.encode(series)
        return out, n_unknown, 0
    if type(enc) is DatetimeEncoder:
        out, n_coerced = enc.encode_coerced(series)
        return out, 0, n_coerced
    return enc.transform(series), enc.count_unknown(series), enc.count_coerced(series)


def count_cells(col: str, n_unknown: int, unknown: dict[str, int], n_coerced: int, coerced: dict[str, int]) -> None:
    """Record a feature's unseen-category and unreadable-cell counts (only when non-zero)."""
    if n_unknown:
        unknown[col] = n_unknown
    if n_coerced:
        coerced[col] = n_coerced


def require_columns(df: pl.DataFrame, columns: Iterable[str]) -> None:
    present = set(df.columns)
    for col in columns:
        if col not in present:
            raise missing_column(col)


@dataclass
class Plan:
    """Where each fitted encoder's output goes, with the plain number encoders as vectors."""

    n_numeric: int
    n_categorical: int
    numbers: list[str] = field(default_factory=list)
    number_slots: list[int] = field(default_factory=list)
    fill: np.ndarray = field(default_factory=lambda: np.empty(0))
    offset: np.ndarray = field(default_factory=lambda: np.empty(0))
    scale: np.ndarray = field(default_factory=lambda: np.empty(0))
    limit: np.ndarray = field(default_factory=lambda: np.empty(0))
    others: list[tuple[str, Encoder, int]] = field(default_factory=list)
    """(column, encoder, first column in its block) for every other encoder."""
    vocabularies: set[str] = field(default_factory=set)
    """Columns whose encoder is a built-in category or binary one (dict lookups allowed)."""

    def scale_numbers(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out[:, number_slots] = clip((x or fill - offset) / scale, -limit, limit)`` for float64
        ``x`` (n, k), in place, NaN and infinities filled; returns the infinities per column."""
        infinite = np.zeros(x.shape[1], dtype=np.int64)
        finite = np.isfinite(x)
        if not finite.all():
            infinite += np.isinf(x).sum(axis=0)
            np.copyto(x, np.broadcast_to(self.fill, x.shape), where=~finite)
        with np.errstate(over="ignore"):
            x -= self.offset
            x /= self.scale
        np.clip(x, -self.limit, self.limit, out=x)
        out[:, self.number_slots] = x
        return infinite

    def place(self, enc: Encoder, pos: int, values: np.ndarray, numeric: np.ndarray,
              categorical: np.ndarray) -> None:
        if enc.kind == "categorical":
            categorical[:, pos] = values
        else:
            w = enc.width_
            numeric[:, pos : pos + w] = values.reshape(len(values), w)


def make_plan(encoders: Mapping[str, Encoder]) -> Plan:
    plan = Plan(0, 0)
    affine: list[tuple[float, float, float, float]] = []
    for col, enc in encoders.items():
        if type(enc) in (CategoryEncoder, BinaryEncoder):
            plan.vocabularies.add(col)
        if enc.kind == "categorical":
            plan.others.append((col, enc, plan.n_categorical))
            plan.n_categorical += 1
            continue
        if type(enc) is NumberEncoder:
            plan.numbers.append(col)
            plan.number_slots.append(plan.n_numeric)
            affine.append((*enc.affine(), enc.limit()))
        else:
            plan.others.append((col, enc, plan.n_numeric))
        plan.n_numeric += enc.width_
    if affine:
        plan.fill, plan.offset, plan.scale, plan.limit = (np.array(v, dtype=np.float64)
                                                          for v in zip(*affine, strict=True))
    return plan


def unreadable_numbers(df: pl.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Per number column, present cells (not null, not blank) a Float64 cast turns null; only
    text columns have any (as :meth:`NumberEncoder.count_coerced` counts them)."""
    counts = np.zeros(len(columns), dtype=np.int64)
    dtypes = dict(zip(df.columns, df.dtypes, strict=True))
    text = [i for i, c in enumerate(columns) if dtypes[c] == pl.String]
    if text:
        row = df.select(
            (
                (pl.col(columns[i]).str.strip_chars() != "")
                & pl.col(columns[i]).cast(pl.Float64, strict=False).is_null()
            ).sum().alias(str(i))
            for i in text
        ).row(0)
        counts[text] = row
    return counts


def nonzero_counts(columns: Sequence[str], counts: np.ndarray) -> dict[str, int]:
    return {c: int(k) for c, k in zip(columns, counts, strict=True) if k}


def number_or_none(value: Any) -> bool:
    """A record value the fast path reads exactly as polars would (bools and huge ints are not)."""
    kind = type(value)
    return value is None or kind is float or (kind is int and -(2**63) <= value < 2**63)


