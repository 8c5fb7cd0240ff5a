"""The features a preprocessor encodes, chosen from the schema and the config.

A tabular feature is ``(column, feature type, encoder)``, where the encoder is ``auto``, an
option of its type (``zscore``, ``onehot``, ...) or a registered encoder name
(:func:`build_encoder` turns it into a fresh encoder); a text column is its
:class:`~dataflywheel.features.text.TextEncoder` parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from dataflywheel.errors import ConfigError
from dataflywheel.features.encoders import ENCODERS, Encoder

if TYPE_CHECKING:
    from dataflywheel.config import FeatureConfig
    from dataflywheel.data.schema import Schema

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
    params: dict[str, Any] = {"max_length": override.max_length, "vocab_size": override.vocab_size,
                              "tokenizer": override.tokenizer}
    if override.truncate != "auto":
        params["truncate"] = override.truncate
    return params


FeatureSpecs = tuple[list[tuple[str, str, str]], list[str], list[tuple[str, dict[str, Any]]]]
"""``(features, skipped, text_features)``: the arguments of a ``Preprocessor``."""


def feature_specs(schema: Schema, overrides: Sequence[FeatureConfig] = (), exclude: Iterable[str] = (), *,
                  text: bool = False, max_texts: int | None = 1) -> FeatureSpecs:
    """Non-target schema columns, minus ``exclude``; ``overrides`` change type or encoder
    (see :meth:`~dataflywheel.features.preprocessor.Preprocessor.from_schema`)."""
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
    if max_texts is not None and len(texts) > max_texts:
        raise ConfigError(
            f"a model of this type reads one text column; found {[c for c, _ in texts]}",
            where="data.features",
            fix="add all but one of them to data.exclude, or use model.type: transformer, which reads several",
        )
    return features, skipped, texts
