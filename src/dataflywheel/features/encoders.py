"""Per-column encoders: one polars Series in, one numpy array out.

Every encoder follows the scikit-learn estimator contract: ``__init__`` only stores
parameters, ``fit`` returns ``self``, learned state ends in ``_``, ``transform`` has no side
effects, and using an unfitted encoder raises :class:`NotFittedError`. ``to_dict`` /
``from_dict`` carry the parameters and learned state as JSON-safe values, so a fitted
encoder can travel inside a model bundle and give identical outputs when loaded.

Encoders are registered by name with :func:`register_encoder`; category and binary values are
compared as strings (:func:`~dataflywheel.data.schema.category_strings`: 1.0 reads "1").

Number and datetime encoders never raise on bad cells: a cell that cannot be read (``"abc"``,
``"yesterday"``) or is infinite counts as *coerced* (:meth:`Encoder.count_coerced`) and is
encoded as missing; NaN and null are plain missing values. Their scaled outputs are clipped to
+-:data:`Z_LIMIT` (+-:data:`RAW_LIMIT` for unscaled numbers), so a huge finite input cannot
overflow float32 into inf and NaN model outputs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl

from dataflywheel.data.schema import category_strings
from dataflywheel.errors import ConfigError, DataError, ModelError, NotFittedError

OutputKind = Literal["numeric", "categorical"]

SMALL_BATCH = 64
"""Up to this many rows, vocabulary lookups go through a Python dict rather than polars."""
Z_LIMIT = 1e4
"""Scaled outputs (z-scores, or training ranges for minmax) are clipped to +-Z_LIMIT: further
out means nothing, and a float32 model holds the value, its square and their sums safely."""
RAW_LIMIT = 1e12
"""Unscaled numbers (method ``none``) are clipped to +-RAW_LIMIT, for the same reason."""


class Encoder(ABC):
    """Base class. Subclasses set ``name``, ``feature_type`` and implement the hooks below.

    ``kind`` says which block of the encoded batch the output joins: ``numeric`` (float32,
    shape (n,) or (n, width)) or ``categorical`` (int64 indices, shape (n,)).
    """

    name: ClassVar[str]
    feature_type: ClassVar[str]
    _state: ClassVar[tuple[str, ...]] = ()
    _optional_state: ClassVar[dict[str, Any]] = {}
    """Learned state added after the first release: name -> value when an old JSON lacks it."""

    @abstractmethod
    def fit(self, series: pl.Series) -> Encoder:
        """Learn state (attributes ending in ``_``) from a train-split column; return self."""

    @abstractmethod
    def transform(self, series: pl.Series) -> np.ndarray:
        """Encode a column with the learned state; no side effects."""

    @property
    def kind(self) -> OutputKind:
        return "numeric"

    @property
    def produces(self) -> tuple[str, ...]:
        """The batch names (:mod:`~dataflywheel.features.batch`) this encoder's output joins."""
        return (self.kind,)

    @property
    def width_(self) -> int:
        """Output columns per row (1 for a vector output)."""
        self._check_fitted()
        return 1

    def count_unknown(self, series: pl.Series) -> int:
        """Present values unseen at fit time (always 0 for encoders without a vocabulary)."""
        self._check_fitted()
        return 0

    def count_coerced(self, series: pl.Series) -> int:
        """Present cells that could not be read and were encoded as missing (0 by default)."""
        self._check_fitted(series)
        return 0

    def encode(self, series: pl.Series) -> tuple[np.ndarray, int]:
        """``(transform(series), count_unknown(series))``; subclasses may share the work."""
        return self.transform(series), self.count_unknown(series)

    def get_params(self) -> dict[str, Any]:
        return {}

    def _check_fitted(self, series: pl.Series | None = None) -> None:
        if not all(hasattr(self, attr) for attr in self._state):
            feature = f" for feature '{series.name}'" if series is not None and series.name else ""
            raise NotFittedError(f"{type(self).__name__}{feature} is not fitted; call fit first")

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        registered = next((n for n, c in ENCODERS.items() if c is type(self)), self.name)
        return {
            "encoder": registered,
            "params": self.get_params(),
            "state": {attr: getattr(self, attr) for attr in (*self._state, *self._optional_state)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Encoder:
        enc_cls = cls
        if cls is Encoder:
            name = data.get("encoder", "")
            if name not in ENCODERS:
                raise ModelError(
                    f"unknown encoder {name!r} (registered: {sorted(ENCODERS)})",
                    fix="register it with register_encoder before loading",
                )
            enc_cls = ENCODERS[name]
        enc = enc_cls(**data.get("params", {}))
        for attr in enc._state:
            if attr not in data.get("state", {}):
                raise ModelError(f"encoder state lacks '{attr}'", where=enc_cls.__name__)
            setattr(enc, attr, data["state"][attr])
        for attr, default in enc._optional_state.items():
            setattr(enc, attr, data.get("state", {}).get(attr, default))
        return enc


def _floats(series: pl.Series) -> pl.Series:
    """``series`` as Float64 with unreadable cells, NaN and infinities as null."""
    s = series.cast(pl.Float64, strict=False)
    return s.to_frame().select(pl.when(pl.first().is_finite()).then(pl.first())).to_series()


def _unreadable(series: pl.Series, parsed: pl.Series) -> int:
    """Cells present in ``series`` (not null, not blank text) that are null in ``parsed``."""
    present = series.is_not_null()
    if series.dtype == pl.String:
        present = present & (series.str.strip_chars() != "")
    return int((present & parsed.is_null()).sum())


def _scale(values: pl.Series, fill: float, offset: float, scale: float, limit: float) -> np.ndarray:
    """``clip((value or fill - offset) / scale, -limit, limit)`` as float32; null reads as missing."""
    x = values.cast(pl.Float64).to_numpy()
    x = np.where(np.isfinite(x), x, fill)
    with np.errstate(over="ignore"):
        x = (x - offset) / scale
    return np.clip(x, -limit, limit).astype(np.float32)


def stat_or(value: Any, default: float) -> float:
    """A statistic polars returned (None for an empty column, or not finite) as a float, else ``default``."""
    return default if value is None or not np.isfinite(value) else float(value)


def _nonzero(value: Any) -> float:
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
        s = _floats(series)
        self.fill_ = stat_or(s.median(), 0.0)
        if self.method == "zscore":
            self.mean_ = stat_or(s.mean(), 0.0)
            self.std_ = _nonzero(s.std(ddof=0))
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
            return self.fill_, self.min_, _nonzero(self.max_ - self.min_)
        return self.fill_, 0.0, 1.0

    def limit(self) -> float:
        """Outputs are clipped to ``[-limit, limit]`` (:data:`Z_LIMIT` or :data:`RAW_LIMIT`)."""
        return RAW_LIMIT if self.method == "none" else Z_LIMIT

    def transform(self, series: pl.Series) -> np.ndarray:
        self._check_fitted(series)
        return _scale(_floats(series), *self.affine(), self.limit())

    def count_coerced(self, series: pl.Series) -> int:
        """Unreadable cells (``"abc"``) and infinities, both encoded as missing."""
        self._check_fitted(series)
        parsed = series.cast(pl.Float64, strict=False)
        return _unreadable(series, parsed) + int(parsed.is_infinite().sum())


def _strings(series: pl.Series) -> pl.Series:
    return series if series.dtype == pl.String else category_strings(series)


def _vocabulary(series: pl.Series) -> list[str]:
    return _strings(series).drop_nulls().unique().sort().to_list()


class _Vocabulary(Encoder):
    """Shared by encoders of a sorted vocabulary ``categories_``: index 1.. for each value, 0 for
    unknown or missing, by polars for long series and a cached dict for short ones."""

    _state = ("categories_",)
    categories_: list[str]

    def _index(self) -> dict[str, int]:
        cached = self.__dict__.get("_lookup")
        if cached is None or cached[0] is not self.categories_:  # refitted or loaded since
            cached = (self.categories_, {c: i for i, c in enumerate(self.categories_, 1)})
            self._lookup = cached
        return cached[1]

    def _indices(self, series: pl.Series) -> pl.Series:
        return _strings(series).replace_strict(
            self.categories_,
            list(range(1, len(self.categories_) + 1)),
            default=0,
            return_dtype=pl.Int64,
        )

    def index_values(self, values: Sequence[str | None]) -> tuple[np.ndarray, int]:
        """Indices (int64) of category strings, and how many present ones are unknown."""
        self._check_fitted()
        index = self._index()
        idx = np.fromiter(
            (0 if v is None else index.get(v, 0) for v in values), dtype=np.int64, count=len(values)
        )
        present = sum(v is not None for v in values)
        return idx, present - int(np.count_nonzero(idx))

    def index_series(self, series: pl.Series) -> tuple[np.ndarray, int]:
        """Indices of a series' values, and how many present ones are unknown."""
        self._check_fitted(series)
        s = _strings(series)
        if s.len() <= SMALL_BATCH:
            return self.index_values(s.to_list())
        idx = self._indices(s).to_numpy()
        return idx, s.len() - s.null_count() - int(np.count_nonzero(idx))

    def count_unknown(self, series: pl.Series) -> int:
        self._check_fitted(series)
        s = _strings(series)
        return int((s.is_not_null() & ~s.is_in(self.categories_)).sum())

    @abstractmethod
    def output(self, idx: np.ndarray) -> np.ndarray:
        """This encoder's output given the vocabulary indices."""

    def encode(self, series: pl.Series) -> tuple[np.ndarray, int]:
        idx, unknown = self.index_series(series)
        return self.output(idx), unknown


class CategoryEncoder(_Vocabulary):
    """A category as an index into its sorted train vocabulary; 0 is unknown or missing.

    With ``onehot`` the output is float32 one-hot of width ``len(categories_) + 1``.
    """

    name = "category"
    feature_type = "category"
    _state = ("categories_",)

    def __init__(self, onehot: bool = False) -> None:
        self.onehot = onehot

    def get_params(self) -> dict[str, Any]:
        return {"onehot": self.onehot}

    @property
    def kind(self) -> OutputKind:
        return "numeric" if self.onehot else "categorical"

    @property
    def width_(self) -> int:
        self._check_fitted()
        return len(self.categories_) + 1 if self.onehot else 1

    @property
    def cardinality_(self) -> int:
        """Distinct indices the output can take, the unknown bucket included."""
        self._check_fitted()
        return len(self.categories_) + 1

    def fit(self, series: pl.Series) -> CategoryEncoder:
        self.categories_: list[str] = _vocabulary(series)
        return self

    def output(self, idx: np.ndarray) -> np.ndarray:
        if not self.onehot:
            return idx
        out = np.zeros((len(idx), self.cardinality_), dtype=np.float32)
        out[np.arange(len(idx)), idx] = 1.0
        return out

    def transform(self, series: pl.Series) -> np.ndarray:
        self._check_fitted(series)
        return self.output(self._indices(series).to_numpy())


class BinaryEncoder(_Vocabulary):
    """A two-valued column as float32: the sorted values map to 0 and 1; unknown/missing to 0.5.

    More than two values at fit raise :class:`DataError`; a single value maps to 0.
    """

    name = "binary"
    feature_type = "binary"
    _state = ("categories_",)

    def fit(self, series: pl.Series) -> BinaryEncoder:
        values = _vocabulary(series)
        if len(values) > 2:
            raise DataError(
                f"has {len(values)} distinct values; a binary feature needs at most 2",
                where=f"column '{series.name}'",
                fix=f"set its type to category under data.features (name: {series.name})",
            )
        self.categories_: list[str] = values
        return self

    def output(self, idx: np.ndarray) -> np.ndarray:
        codes = np.array([0.5, *range(len(self.categories_))], dtype=np.float32)
        return codes[idx]

    def transform(self, series: pl.Series) -> np.ndarray:
        self._check_fitted(series)
        return self.output(self._indices(series).to_numpy())


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
        self.std_ = _nonzero(s.std(ddof=0))
        self.fill_ = stat_or(s.median(), self.mean_)
        return self

    def encode_coerced(self, series: pl.Series) -> tuple[np.ndarray, int]:
        """``(transform(series), count_coerced(series))``, parsing once."""
        self._check_fitted(series)
        seconds = _epoch_seconds(series, self.__dict__.get("format_"))
        out = _scale(seconds, self.fill_, self.mean_, self.std_, Z_LIMIT)
        return out, _unreadable(series, seconds)

    def transform(self, series: pl.Series) -> np.ndarray:
        return self.encode_coerced(series)[0]

    def count_coerced(self, series: pl.Series) -> int:
        return self.encode_coerced(series)[1]


ENCODERS: dict[str, type[Encoder]] = {}


def register_encoder(name: str, cls: type[Encoder]) -> None:
    """Make ``cls`` available under ``name``; a name already taken raises :class:`ConfigError`."""
    if name in ENCODERS:
        raise ConfigError(
            f"encoder '{name}' is already registered ({ENCODERS[name].__name__})",
            fix="register it under another name",
        )
    ENCODERS[name] = cls


register_encoder("number", NumberEncoder)
register_encoder("category", CategoryEncoder)
register_encoder("binary", BinaryEncoder)
register_encoder("datetime", DatetimeEncoder)
