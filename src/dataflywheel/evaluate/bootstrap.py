"""A paired bootstrap interval of the difference between two models scored item by item.

Both models answer the same items (test prompts); each item gives each model a score (ROUGE-L
of its answer, 1 or 0 for an exact match). The difference of the two means is estimated by
resampling items with replacement, the same items for both models (paired: an item's
difficulty cancels out), and the interval is the percentile interval of the resampled mean
differences (``scipy.stats.bootstrap(method="percentile")`` computes the same one). An interval
that excludes zero says the difference is beyond what resampling the items would explain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 10_000
_CHUNK = 1_000_000
"""Resampled indices drawn at once (8 MB), whatever the number of items."""


@dataclass(frozen=True)
class Interval:
    """``difference`` (mean of ours minus theirs) and its bootstrap interval ``[low, high]``."""

    difference: float
    low: float
    high: float
    confidence: float
    n: int
    """Items both models were scored on."""
    ours: float
    theirs: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "excludes_zero": self.excludes_zero}

    def describe(self, metric: str, other: str) -> str:
        """``rouge_l 0.4120 vs base 0.1180 (+0.2940, 95 % interval [+0.2620, +0.3270]) on 240 items``."""
        pct = f"{self.confidence * 100:g} %"
        return (f"{metric} {self.ours:.4f} vs {other} {self.theirs:.4f} ({self.difference:+.4f}, {pct} interval "
                f"[{self.low:+.4f}, {self.high:+.4f}]) on {self.n} items")


def paired_interval(ours: Sequence[float] | np.ndarray, theirs: Sequence[float] | np.ndarray, *,
                    confidence: float = CONFIDENCE, n_resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """The percentile bootstrap interval of ``mean(ours) - mean(theirs)`` over paired items."""
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired scores need two equal, non-empty 1-d arrays (got {a.shape} and {b.shape})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (got {confidence})")
    diff = a - b
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK // diff.size)
    means = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, per_chunk):
        stop = min(n_resamples, start + per_chunk)
        idx = rng.integers(0, diff.size, size=(stop - start, diff.size))  # (chunk, n)
        means[start:stop] = diff[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(diff.mean()), float(low), float(high), confidence, int(diff.size),
                    float(a.mean()), float(b.mean()))
