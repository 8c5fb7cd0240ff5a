"""The Preprocessor: a table in, model-ready arrays out, identically at training and serving time.

It holds one encoder per feature column (see :mod:`dataflywheel.features.encoders`), fitted
on the train split only. ``transform`` encodes every number column in one numpy pass (the
server sends many one-row batches, so per-column overhead matters) and ``transform_records``
encodes a list of dicts without building a frame. Numbers, binaries, datetimes and one-hot categories join a float32
``numeric`` block; index-encoded categories join an int64 ``categorical`` block (for
embeddings, with ``cardinalities_`` giving each one's size). A text column (one, for models
that read text: see ``from_schema(text=True)``) becomes ragged token ids in ``tokens``. Its
whole state is JSON, saved atomically, so a bundle's ``preprocessor.json`` reproduces the
training-time encoding exactly.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from dataflywheel.errors import ConfigError, DataError, ModelError, NotFittedError, SchemaError
from dataflywheel.features.encoders import (
    ENCODERS,
    BinaryEncoder,
    CategoryEncoder,
    DatetimeEncoder,
    Encoder,
    NumberEncoder,
)
from dataflywheel.features.ragged import Ragged
from dataflywheel.features.text import TextEncoder

if TYPE_CHECKING:
    from dataflywheel.config import FeatureConfig
    from dataflywheel.data.schema import Schema

FORMAT = "dataflywheel.preprocessor/1"
CHUNK_ROWS = 65_536
"""Rows per numpy pass over the number columns (bounds the float64 scratch memory)."""
RECORDS_MAX = 256
"""Longer record lists go through a polars frame, which is faster at that size."""

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
    tokens: Ragged | None = None
    """Token ids of the text column (no padding), or None when the preprocessor has none."""
    truncated: dict[str, int] = field(default_factory=dict)
    """Texts per text column cut to its max_length (columns with none left out)."""
    coerced: dict[str, int] = field(default_factory=dict)
    """Cells per number or datetime feature that could not be read ("abc", "yesterday") or were
    infinite, and were encoded as missing (features with none left out)."""

    @property
    def inputs(self) -> dict[str, np.ndarray | Ragged]:
        """The encoded rows by batch name (:mod:`~dataflywheel.features.batch`): ``numeric``,
        ``categorical`` and, with a text column, ragged ``tokens`` (padded per mini-batch)."""
        named: dict[str, np.ndarray | Ragged] = {"numeric": self.numeric, "categorical": self.categorical}
        if self.tokens is not None:
            named["tokens"] = self.tokens
        return named


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


def _text_params(override: FeatureConfig | None) -> dict[str, Any]:
    """:class:`TextEncoder` parameters from a feature's config (defaults when none); a relative
    ``tokenizer`` path stays relative (the preprocessor resolves it at fit, and saves it as given)."""
    if override is None:
        return {}
    return {"max_length": override.max_length, "vocab_size": override.vocab_size, "tokenizer": override.tokenizer}


def _missing_column(col: str) -> SchemaError:
    return SchemaError(
        "input column is missing",
        where=f"column '{col}'",
        fix="send every feature the model was trained on",
    )


def _encode_column(enc: Any, series: pl.Series, vocabulary: bool) -> tuple[np.ndarray, int, int]:
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


def _count(col: str, n_unknown: int, unknown: dict[str, int], n_coerced: int, coerced: dict[str, int]) -> None:
    """Record a feature's unseen-category and unreadable-cell counts (only when non-zero)."""
    if n_unknown:
        unknown[col] = n_unknown
    if n_coerced:
        coerced[col] = n_coerced


def _require_columns(df: pl.DataFrame, columns: Iterable[str]) -> None:
    present = set(df.columns)
    for col in columns:
        if col not in present:
            raise _missing_column(col)


@dataclass
class _Plan:
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


def _plan(encoders: Mapping[str, Encoder]) -> _Plan:
    plan = _Plan(0, 0)
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
        plan.fill, plan.offset, plan.scale, plan.limit = (np.array(v, dtype=np.float64) for v in zip(*affine, strict=True))
    return plan


def _unreadable_numbers(df: pl.DataFrame, columns: Sequence[str]) -> np.ndarray:
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


def _nonzero_counts(columns: Sequence[str], counts: np.ndarray) -> dict[str, int]:
    return {c: int(k) for c, k in zip(columns, counts, strict=True) if k}


def _number_or_none(value: Any) -> bool:
    """A record value the fast path reads exactly as polars would (bools and huge ints are not)."""
    kind = type(value)
    return value is None or kind is float or (kind is int and -(2**63) <= value < 2**63)


class Preprocessor:
    """Encode ``features``: a list of (column, feature type, encoder name or "auto"), plus
    ``text_features``: (column, :class:`TextEncoder` parameters), at most one.

    ``skipped`` lists columns deliberately left out (text, for a model that reads no text),
    kept for reporting.
    """

    def __init__(
        self,
        features: Sequence[tuple[str, str, str]],
        skipped: Sequence[str] = (),
        text_features: Sequence[tuple[str, Mapping[str, Any]]] = (),
        *,
        base_dir: Path | None = None,
    ) -> None:
        self.features = [tuple(f) for f in features]
        self.skipped = list(skipped)
        self.text_features = [(col, dict(params)) for col, params in text_features]
        self.base_dir = base_dir
        """Where a relative tokenizer path is read from at fit (not saved)."""

    @classmethod
    def from_schema(
        cls,
        schema: Schema,
        overrides: Sequence[FeatureConfig] = (),
        exclude: Iterable[str] = (),
        *,
        text: bool = False,
        base_dir: Path | None = None,
    ) -> Preprocessor:
        """Non-target schema columns, minus ``exclude``; ``overrides`` change type or encoder.

        Text columns are skipped unless ``text`` (the model reads token ids); then exactly one
        may remain. A relative ``tokenizer`` path resolves against ``base_dir``.
        """
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
        texts: list[tuple[str, dict[str, Any]]] = []
        for col in schema.features:
            if col.name in excluded:
                continue
            override = by_name.get(col.name)
            ftype = (override.type if override is not None else None) or col.type
            encoder = override.encoder if override is not None else "auto"
            if ftype == "text":
                if text:
                    texts.append((col.name, _text_params(override)))
                else:
                    skipped.append(col.name)
                continue
            build_encoder(col.name, ftype, encoder)  # reject a bad combination now, not at fit
            features.append((col.name, ftype, encoder))
        if len(texts) > 1:
            raise ConfigError(
                f"a model reads one text column; found {[c for c, _ in texts]}",
                where="data.features",
                fix="add all but one of them to data.exclude",
            )
        return cls(features, skipped, texts, base_dir=base_dir)

    def fit(self, df: pl.DataFrame) -> Preprocessor:
        """Fit every encoder on ``df`` (the train split)."""
        _require_columns(df, [f[0] for f in self.features] + [c for c, _ in self.text_features])
        self.encoders_: dict[str, Encoder] = {
            col: build_encoder(col, ftype, enc).fit(df[col]) for col, ftype, enc in self.features
        }
        self.text_encoders_: dict[str, TextEncoder] = {
            col: TextEncoder(**params).fit(df[col], base_dir=self.base_dir) for col, params in self.text_features
        }
        return self

    def _layout(self) -> _Plan:
        """The plan for the current encoders, built once per fit or load."""
        encoders = self._fitted()
        cached = self.__dict__.get("_plan_cache")
        if cached is None or cached[0] is not encoders:
            cached = (encoders, _plan(encoders))
            self._plan_cache = cached
        return cached[1]

    def _fitted(self) -> dict[str, Encoder]:
        if not hasattr(self, "encoders_"):
            raise NotFittedError("Preprocessor is not fitted; call fit on the train split first")
        return self.encoders_

    @property
    def input_columns_(self) -> list[str]:
        """Every column ``transform`` reads: the tabular features, then the text column."""
        return [*self._fitted(), *self.__dict__.get("text_encoders_", {})]

    @property
    def text_encoder_(self) -> TextEncoder | None:
        """The text column's fitted encoder (vocab_size_, max_length, pad_id_), if any."""
        self._fitted()
        texts = self.__dict__.get("text_encoders_", {})
        return next(iter(texts.values()), None)

    @property
    def produces_(self) -> tuple[str, ...]:
        """The batch names ``transform`` fills: ``numeric`` and ``categorical`` always (a block
        may be 0 wide), then the text encoder's."""
        names = ["numeric", "categorical"]
        for enc in [*self._fitted().values(), *self.__dict__.get("text_encoders_", {}).values()]:
            names += [n for n in enc.produces if n not in names]
        return tuple(names)

    @property
    def pad_id_(self) -> int:
        """The padding id of the text column's tokens (0 without one)."""
        text = self.text_encoder_
        return text.pad_id_ if text is not None else 0

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
        """Encode ``df`` (extra columns ignored); a missing feature raises :class:`SchemaError`."""
        plan = self._layout()
        _require_columns(df, self.encoders_)
        n = df.height
        numeric = np.empty((n, plan.n_numeric), dtype=np.float32)
        categorical = np.empty((n, plan.n_categorical), dtype=np.int64)
        coerced = np.zeros(len(plan.numbers), dtype=np.int64)
        if plan.numbers:
            floats = [pl.col(c).cast(pl.Float64, strict=False) for c in plan.numbers]
            for start in range(0, max(n, 1), CHUNK_ROWS):
                x = df.slice(start, CHUNK_ROWS).select(floats).to_numpy()
                if not x.flags.writeable:
                    x = x.copy()
                coerced += plan.scale_numbers(x, numeric[start : start + CHUNK_ROWS])
            coerced += _unreadable_numbers(df, plan.numbers)
        unknown: dict[str, int] = {}
        batch = EncodedBatch(numeric=numeric, categorical=categorical, unknown=unknown,
                             coerced=_nonzero_counts(plan.numbers, coerced))
        for col, enc, pos in plan.others:
            out, n_unknown, n_coerced = _encode_column(enc, df[col], col in plan.vocabularies)
            plan.place(enc, pos, out, numeric, categorical)
            _count(col, n_unknown, unknown, n_coerced, batch.coerced)
        if self.__dict__.get("text_encoders_"):
            _require_columns(df, self.text_encoders_)
            self._encode_text(batch, {c: df[c] for c in self.text_encoders_})
        return batch

    def _encode_text(self, batch: EncodedBatch, columns: Mapping[str, pl.Series]) -> None:
        # A missing text is read as empty beside other inputs; alone, there is nothing to score
        # (the server's request model applies the same rule).
        alone = len(self.input_columns_) == 1
        for col, enc in self.text_encoders_.items():
            if alone and columns[col].null_count():
                first = int(columns[col].is_null().arg_max() or 0)
                raise DataError(f"missing text ({columns[col].null_count()} row(s))", where=f"row {first + 1}, column '{col}'",
                                fix="give every record a text: it is the model's only input")
            batch.tokens, n_truncated = enc.encode(columns[col])
            if n_truncated:
                batch.truncated[col] = n_truncated

    def transform_records(self, records: Sequence[Mapping[str, Any]]) -> EncodedBatch:
        """``transform(pl.DataFrame(records, infer_schema_length=None))``, without the frame
        for short lists of plain values.

        A key absent from some records reads as missing there; absent from all of them, it
        raises :class:`SchemaError`. Number columns holding only floats, ints and None, and
        category or binary columns holding only strings and None, skip polars; any other
        column is read as polars would read it.
        """
        plan = self._layout()
        if len(records) > RECORDS_MAX:
            return self.transform(pl.DataFrame(records, infer_schema_length=None))
        columns: dict[str, list[Any]] = {}
        for col in self.encoders_:
            values = [r.get(col) for r in records]
            if not any(col in r for r in records):
                raise _missing_column(col)
            columns[col] = values
        n = len(records)
        numeric = np.empty((n, plan.n_numeric), dtype=np.float32)
        categorical = np.empty((n, plan.n_categorical), dtype=np.int64)
        coerced = np.zeros(len(plan.numbers), dtype=np.int64)
        if plan.numbers:
            if all(_number_or_none(v) for c in plan.numbers for v in columns[c]):
                x = np.array([columns[c] for c in plan.numbers], dtype=np.float64).T
            else:
                frame = pl.DataFrame([pl.Series(c, columns[c], strict=False) for c in plan.numbers])
                coerced += _unreadable_numbers(frame, plan.numbers)
                x = frame.select(pl.col(plan.numbers).cast(pl.Float64, strict=False)).to_numpy()
            coerced += plan.scale_numbers(np.array(x, dtype=np.float64, order="C"), numeric)
        unknown: dict[str, int] = {}
        batch = EncodedBatch(numeric=numeric, categorical=categorical, unknown=unknown,
                             coerced=_nonzero_counts(plan.numbers, coerced))
        for col, enc, pos in plan.others:
            values = columns[col]
            if col in plan.vocabularies and all(v is None or type(v) is str for v in values):
                idx, n_unknown = enc.index_values(values)  # type: ignore[attr-defined]
                out, n_coerced = enc.output(idx), 0  # type: ignore[attr-defined]
            else:
                series = pl.Series(col, values, strict=False)
                out, n_unknown, n_coerced = _encode_column(enc, series, col in plan.vocabularies)
            plan.place(enc, pos, out, numeric, categorical)
            _count(col, n_unknown, unknown, n_coerced, batch.coerced)
        if self.__dict__.get("text_encoders_"):
            texts: dict[str, pl.Series] = {}
            for col in self.text_encoders_:
                if not any(col in r for r in records):
                    raise _missing_column(col)
                texts[col] = pl.Series(col, [r.get(col) for r in records], dtype=pl.Utf8, strict=False)
            self._encode_text(batch, texts)
        return batch

    def to_dict(self) -> dict[str, Any]:
        encoders = self._fitted()
        return {
            "format": FORMAT,
            "features": [list(f) for f in self.features],
            "skipped": self.skipped,
            "encoders": {col: enc.to_dict() for col, enc in encoders.items()},
            "text_features": [[col, params] for col, params in self.text_features],
            "text_encoders": {
                col: enc.to_dict() for col, enc in self.__dict__.get("text_encoders_", {}).items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        if data.get("format") != FORMAT:
            raise ModelError(
                f"unsupported preprocessor format {data.get('format')!r} (expected {FORMAT})",
                fix="re-train the model with this version of dataflywheel",
            )
        pre = cls(
            [tuple(f) for f in data["features"]],
            data.get("skipped", ()),
            [(col, params) for col, params in data.get("text_features", ())],
        )
        pre.encoders_ = {col: Encoder.from_dict(d) for col, d in data["encoders"].items()}
        pre.text_encoders_ = {
            col: TextEncoder.from_dict(d) for col, d in data.get("text_encoders", {}).items()
        }
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
