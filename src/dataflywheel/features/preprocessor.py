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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from dataflywheel.errors import DataError, ModelError, NotFittedError
from dataflywheel.features.batch_names import text_names
from dataflywheel.features.categories import VocabularyEncoder
from dataflywheel.features.encoded import (
    EncodedBatch,
    Plan,
    count_cells,
    encode_column,
    make_plan,
    missing_column,
    nonzero_counts,
    number_or_none,
    require_columns,
    unreadable_numbers,
)
from dataflywheel.features.encoders import CategoryEncoder, Encoder
from dataflywheel.features.specs import build_encoder, feature_specs
from dataflywheel.features.text import TextEncoder
from dataflywheel.features.text_encoders import build_text_encoder, text_encoder_from_dict
from dataflywheel.store.artifacts import atomic_write_text

if TYPE_CHECKING:
    from dataflywheel.config import FeatureConfig
    from dataflywheel.data.schema import Schema

FORMAT = "dataflywheel.preprocessor/1"
CHUNK_ROWS = 65_536
"""Rows per numpy pass over the number columns (bounds the float64 scratch memory)."""
RECORDS_MAX = 256
"""Longer record lists go through a polars frame, which is faster at that size."""

class Preprocessor:
    """Encode ``features``: a list of (column, feature type, encoder name or "auto"), plus
    ``text_features``: (column, text encoder parameters), one encoder per text column; the
    parameters' ``encoder`` names its kind (:mod:`~dataflywheel.features.text_encoders`: ``text``,
    the default, or ``chat``, which also reads the completion column when a frame holds it).

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
        max_texts: int | None = 1,
        base_dir: Path | None = None,
        text_params: Mapping[str, Any] | None = None,
    ) -> Preprocessor:
        """Non-target schema columns, minus ``exclude``; ``overrides`` change type or encoder.

        Text columns are skipped unless ``text`` (the model reads token ids); then at most
        ``max_texts`` may remain (None: any number, each read through its own inputs). A
        relative ``tokenizer`` path resolves against ``base_dir``. ``text_params`` are added to
        every text column's parameters (the task's, :meth:`~dataflywheel.tasks.Task.text_params`).
        """
        features, skipped, texts = feature_specs(schema, overrides, exclude, text=text, max_texts=max_texts)
        texts = [(col, {**params, **(text_params or {})}) for col, params in texts]
        return cls(features, skipped, texts, base_dir=base_dir)

    def fit(self, df: pl.DataFrame) -> Preprocessor:
        """Fit every encoder on ``df`` (the train split)."""
        require_columns(df, [f[0] for f in self.features] + [c for c, _ in self.text_features])
        self.encoders_: dict[str, Encoder] = {
            col: build_encoder(col, ftype, enc).fit(df[col]) for col, ftype, enc in self.features
        }
        self.text_encoders_: dict[str, TextEncoder] = {
            col: build_text_encoder(params).fit(df[col], base_dir=self.base_dir) for col, params in self.text_features
        }
        return self

    def _layout(self) -> Plan:
        """The plan for the current encoders, built once per fit or load."""
        encoders = self._fitted()
        cached = self.__dict__.get("_plan_cache")
        if cached is None or cached[0] is not encoders:
            cached = (encoders, make_plan(encoders))
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
        may be 0 wide), then the text encoders' (a chat encoder's ``labels`` when the frame holds
        the completion)."""
        names = ["numeric", "categorical"]
        for enc in self._fitted().values():
            names += [n for n in enc.produces if n not in names]
        for i, text in enumerate(self.text_encoders.values()):
            names += [*text_names(i), *text.extra_produces]
        return tuple(names)

    @property
    def text_encoders(self) -> dict[str, TextEncoder]:
        """The fitted encoder of each text column, in order (empty without one)."""
        self._fitted()
        texts: dict[str, TextEncoder] = self.__dict__.get("text_encoders_", {})
        return texts

    @property
    def pad_ids_(self) -> dict[str, int]:
        """The padding id of each text column's tokens, by its token input's batch name (and of
        a chat encoder's ``labels``)."""
        pads: dict[str, int] = {}
        for i, enc in enumerate(self.text_encoders.values()):
            pads[text_names(i)[0]] = enc.pad_id_
            pads.update(enc.extra_pad_ids)
        return pads

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
        require_columns(df, self.encoders_)
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
            coerced += unreadable_numbers(df, plan.numbers)
        unknown: dict[str, int] = {}
        batch = EncodedBatch(numeric=numeric, categorical=categorical, unknown=unknown,
                             coerced=nonzero_counts(plan.numbers, coerced))
        for col, enc, pos in plan.others:
            out, n_unknown, n_coerced = encode_column(enc, df[col], col in plan.vocabularies)
            plan.place(enc, pos, out, numeric, categorical)
            count_cells(col, n_unknown, unknown, n_coerced, batch.coerced)
        if self.__dict__.get("text_encoders_"):
            require_columns(df, self.text_encoders_)
            also = [c for enc in self.text_encoders_.values() for c in enc.also_reads if c in df.columns]
            self._encode_text(batch, {c: df[c] for c in [*self.text_encoders_, *also]})
        return batch

    def _encode_text(self, batch: EncodedBatch, columns: Mapping[str, pl.Series]) -> None:
        # A missing text is read as empty beside other inputs; alone, there is nothing to score
        # (the server's request model applies the same rule).
        alone = len(self.input_columns_) == 1
        for col, enc in self.text_encoders_.items():
            if alone and columns[col].null_count():
                first = int(columns[col].is_null().arg_max() or 0)
                raise DataError(f"missing text ({columns[col].null_count()} row(s))",
                                where=f"row {first + 1}, column '{col}'",
                                fix="give every record a text: it is the model's only input")
            encoded = enc.encode_columns(columns, col)
            batch.texts[col] = encoded.ids
            batch.extra.update(encoded.extra)
            if encoded.truncated:
                batch.truncated[col] = encoded.truncated
            if encoded.rejected:
                batch.rejected[col] = encoded.rejected

    def transform_records(self, records: Sequence[Mapping[str, Any]], *, validated: bool = False) -> EncodedBatch:
        """``transform(pl.DataFrame(records, infer_schema_length=None))``, without the frame
        for short lists of plain values.

        A key absent from some records reads as missing there; absent from all of them, it
        raises :class:`SchemaError`. Number columns holding only floats, ints and None, and
        category or binary columns holding only strings and None, skip polars; any other
        column is read as polars would read it. ``validated``: the caller vouches that every
        record holds every column and number columns only finite floats and None (the server's
        request model does), so records are neither checked for missing columns nor their
        numbers value by value.
        """
        plan = self._layout()
        if len(records) > RECORDS_MAX:
            return self.transform(pl.DataFrame(records, infer_schema_length=None))
        if not validated:
            present = records[0].keys() if len(records) == 1 else {k for r in records for k in r}
            for col in self.encoders_:
                if col not in present:
                    raise missing_column(col)
        columns = {col: [r.get(col) for r in records] for col, _, _ in plan.others}
        n = len(records)
        numeric = np.empty((n, plan.n_numeric), dtype=np.float32)
        categorical = np.empty((n, plan.n_categorical), dtype=np.int64)
        coerced = np.zeros(len(plan.numbers), dtype=np.int64)
        if plan.numbers:
            if validated:  # every value a finite float or None (-> NaN, filled below)
                x = np.array([[r[c] for c in plan.numbers] for r in records], dtype=np.float64)
            else:
                by_column = [[r.get(c) for r in records] for c in plan.numbers]
                if all(type(v) is float or number_or_none(v) for column in by_column for v in column):
                    x = np.array(by_column, dtype=np.float64).T
                else:
                    frame = pl.DataFrame([pl.Series(c, column, strict=False)
                                          for c, column in zip(plan.numbers, by_column, strict=True)])
                    coerced += unreadable_numbers(frame, plan.numbers)
                    x = frame.select(pl.col(plan.numbers).cast(pl.Float64, strict=False)).to_numpy()
            coerced += plan.scale_numbers(np.array(x, dtype=np.float64, order="C"), numeric)
        unknown: dict[str, int] = {}
        batch = EncodedBatch(numeric=numeric, categorical=categorical, unknown=unknown,
                             coerced=nonzero_counts(plan.numbers, coerced))
        for col, enc, pos in plan.others:
            values = columns[col]
            if (col in plan.vocabularies and isinstance(enc, VocabularyEncoder)
                    and all(v is None or type(v) is str for v in values)):
                idx, n_unknown = enc.index_values(values)
                out, n_coerced = enc.output(idx), 0
            else:
                series = pl.Series(col, values, strict=False)
                out, n_unknown, n_coerced = encode_column(enc, series, col in plan.vocabularies)
            plan.place(enc, pos, out, numeric, categorical)
            count_cells(col, n_unknown, unknown, n_coerced, batch.coerced)
        if self.__dict__.get("text_encoders_"):
            texts: dict[str, pl.Series] = {}
            for col in self.text_encoders_:
                if not any(col in r for r in records):
                    raise missing_column(col)
                texts[col] = pl.Series(col, [r.get(col) for r in records], dtype=pl.Utf8, strict=False)
            for col in (c for enc in self.text_encoders_.values() for c in enc.also_reads):
                if any(col in r for r in records):
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
            col: text_encoder_from_dict(d) for col, d in data.get("text_encoders", {}).items()
        }
        return pre

    def save(self, path: str | Path) -> Path:
        """Write JSON to ``path`` atomically (a temp file beside it, then ``os.replace``)."""
        path = Path(path)
        text = json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False, indent=1)
        atomic_write_text(path, text)
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
