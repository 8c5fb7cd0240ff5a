"""The encoder contract and the registry of encoders by name.

Every encoder follows the scikit-learn estimator contract: ``__init__`` only stores
parameters, ``fit`` returns ``self``, learned state ends in ``_``, ``transform`` has no side
effects, and using an unfitted encoder raises :class:`NotFittedError`. ``to_dict`` /
``from_dict`` carry the parameters and learned state as JSON-safe values, so a fitted
encoder can travel inside a model bundle and give identical outputs when loaded.

The built-in encoders are in :mod:`dataflywheel.features.encoders`, which registers them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl

from dataflywheel.errors import ConfigError, ModelError, NotFittedError

OutputKind = Literal["numeric", "categorical"]


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


ENCODERS: dict[str, type[Encoder]] = {}


def register_encoder(name: str, cls: type[Encoder]) -> None:
    """Make ``cls`` available under ``name``; a name already taken raises :class:`ConfigError`."""
    if name in ENCODERS:
        raise ConfigError(
            f"encoder '{name}' is already registered ({ENCODERS[name].__name__})",
            fix="register it under another name",
        )
    ENCODERS[name] = cls
