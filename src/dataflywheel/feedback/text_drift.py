"""Drift of a text input, read through the model's own tokenizer.

Three statistics per text column, each compared between the training texts and recent ones:

* **length**: tokens per text before truncation (special tokens included): PSI over the
  reference's quantile bins and the Kolmogorov-Smirnov test, as for a number
  (:func:`~dataflywheel.feedback.drift.numeric_drift`);
* **unknown-token share**: the share of tokens that are the tokenizer's unknown token (words
  the vocabulary cannot spell); PSI over the two shares (unknown, known);
* **truncation rate**: the share of texts longer than the model's ``max_length`` (cut, so the
  model reads less of them); PSI over the two shares (truncated, whole).

The feature's ``psi`` is the largest of the three (``psi_of`` names which), so the report's
``max_psi`` and the retrain trigger see text drift like any other. Missing and blank texts are
counted as missing and left out. A reference of more than :data:`MAX_REFERENCE_TEXTS` texts is
subsampled (seeded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from dataflywheel.feedback.drift import (
    FeatureDrift,
    NumericReference,
    drift_level,
    numeric_drift,
    numeric_reference,
    psi_from_shares,
)

MAX_REFERENCE_TEXTS = 20_000
"""Training texts tokenised for the reference (a seeded sample beyond this)."""


@dataclass(frozen=True)
class TextStats:
    """Per text: tokens before truncation, unknown tokens; plus the missing count."""

    lengths: np.ndarray
    unknown: np.ndarray
    missing: int
    max_length: int

    @property
    def n(self) -> int:
        return int(self.lengths.size)

    def unknown_share(self) -> float | None:
        total = int(self.lengths.sum())
        return float(self.unknown.sum() / total) if total else None

    def truncated_share(self) -> float | None:
        return float(np.mean(self.lengths > self.max_length)) if self.n else None


def text_stats(encoder: Any, values: pl.Series | list[Any]) -> TextStats:
    """Tokenise ``values`` with ``encoder``'s tokenizer (a fitted
    :class:`~dataflywheel.features.text.TextEncoder`), without truncation."""
    from tokenizers import Tokenizer

    series = values if isinstance(values, pl.Series) else pl.Series(values, dtype=pl.String, strict=False)
    texts = [t for t in series.cast(pl.String, strict=False).to_list() if isinstance(t, str) and t.strip()]
    missing = series.len() - len(texts)
    tok = Tokenizer.from_str(encoder.tokenizer_json_)
    tok.no_truncation()
    tok.no_padding()
    unk = _unknown_id(tok)
    encodings = tok.encode_batch(texts) if texts else []
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    unknown = np.fromiter((e.ids.count(unk) if unk is not None else 0 for e in encodings), dtype=np.int64,
                          count=len(encodings))
    return TextStats(lengths, unknown, missing, int(encoder.max_length))


def _unknown_id(tok: Any) -> int | None:
    token = getattr(tok.model, "unk_token", None)
    return tok.token_to_id(token) if token else None


@dataclass(frozen=True)
class TextReference:
    length: NumericReference
    unknown_share: float | None
    truncated_share: float | None
    n: int
    max_length: int


def text_reference(encoder: Any, values: pl.Series, bins: int = 10) -> TextReference:
    """The reference statistics of the training texts ``values``."""
    if values.len() > MAX_REFERENCE_TEXTS:
        values = values.sample(MAX_REFERENCE_TEXTS, seed=0)
    stats = text_stats(encoder, values)
    return TextReference(numeric_reference(stats.lengths.astype(np.float64), bins), stats.unknown_share(),
                         stats.truncated_share(), stats.n, stats.max_length)


def _share_psi(reference: float | None, recent: float | None) -> float | None:
    if reference is None or recent is None:
        return None
    return psi_from_shares(np.array([reference, 1.0 - reference]), np.array([recent, 1.0 - recent]))


def text_drift(reference: TextReference, encoder: Any, values: pl.Series | list[Any]) -> dict[str, Any]:
    """The report entry of one text feature: the usual drift fields (``psi`` the largest of the
    three statistics) plus ``text``: each statistic's reference and recent value and PSI."""
    stats = text_stats(encoder, values)
    length = numeric_drift(reference.length, stats.lengths.astype(np.float64))
    recent_unknown, recent_truncated = stats.unknown_share(), stats.truncated_share()
    psis = {"length": length.psi, "unknown_share": _share_psi(reference.unknown_share, recent_unknown),
            "truncated_share": _share_psi(reference.truncated_share, recent_truncated)}
    defined = {k: v for k, v in psis.items() if v is not None}
    psi_of = max(defined, key=lambda k: defined[k]) if defined else None
    psi = defined[psi_of] if psi_of is not None else None
    summary = FeatureDrift(psi, drift_level(psi) if psi is not None else None, length.ks_statistic, length.ks_pvalue,
                           reference.n, stats.n, stats.missing, psi_noise=length.psi_noise).to_dict()
    mean = float(stats.lengths.mean()) if stats.n else None
    return summary | {
        "psi_of": psi_of,
        "text": {
            "max_length": reference.max_length,
            "length_mean": {"reference": _mean(reference.length), "recent": mean, "psi": psis["length"]},
            "unknown_share": {"reference": reference.unknown_share, "recent": recent_unknown,
                              "psi": psis["unknown_share"]},
            "truncated_share": {"reference": reference.truncated_share, "recent": recent_truncated,
                                "psi": psis["truncated_share"]},
        },
    }


def _mean(ref: NumericReference) -> float | None:
    return float(ref.values.mean()) if ref.values.size else None
