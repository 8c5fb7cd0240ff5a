"""Drift between a reference sample (the training data) and recent inputs, one feature at a time.

* **PSI** (population stability index), ``sum((c - r) * ln(c / r))`` over bins, where ``r``
  and ``c`` are the reference and recent shares of each bin. Numbers use quantile bins of the
  reference (so each holds about the same share of it; ties merge bins); categories use one
  bin per reference category plus one for every value the reference never had. A share of
  zero is replaced by :data:`EPSILON` (shares are not renormalised), so the index stays finite.
  Conventional reading (:func:`drift_level`): < 0.1 none, 0.1-0.2 moderate, > 0.2 significant.
* **Kolmogorov-Smirnov** two-sample test for numbers (:func:`scipy.stats.ks_2samp`).

A reference is summarised once (:func:`numeric_reference`, :func:`category_reference`) and
compared against any number of recent samples; missing values are left out of both sides and
counted separately. All functions are vectorised with numpy/polars.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from dataflywheel.data.schema import category_strings, missing_mask, unseen_mask

EPSILON = 1e-4
"""Stand-in share for an empty bin."""
MODERATE, SIGNIFICANT = 0.1, 0.2
KS_MAX_REFERENCE = 50_000
"""Larger references are subsampled (seeded) for the KS test; PSI always uses all of it."""

DriftLevel = Literal["none", "moderate", "significant"]


def drift_level(psi: float) -> DriftLevel:
    if psi > SIGNIFICANT:
        return "significant"
    return "moderate" if psi >= MODERATE else "none"


def psi_from_shares(reference: np.ndarray, recent: np.ndarray, eps: float = EPSILON) -> float:
    """PSI of two share vectors over the same bins (zero shares become ``eps``)."""
    r = np.where(reference > 0, reference, eps)
    c = np.where(recent > 0, recent, eps)
    return float(np.sum((c - r) * np.log(c / r)))


def _present(values: pl.Series | np.ndarray | list[Any]) -> tuple[pl.Series, int]:
    """The non-missing values of ``values`` and the count of missing ones."""
    s = values if isinstance(values, pl.Series) else pl.Series(values, strict=False)
    mask = missing_mask(s)
    return s.filter(~mask), int(mask.sum())


def _finite_floats(values: pl.Series | np.ndarray | list[Any]) -> tuple[np.ndarray, int]:
    """Finite values as float64 and the count of the rest (null, NaN, infinite: all "missing")."""
    if isinstance(values, pl.Series):
        x = values.cast(pl.Float64, strict=False).to_numpy()
    else:
        x = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(x)
    return x[keep], int(x.size - keep.sum())


@dataclass(frozen=True)
class NumericReference:
    edges: np.ndarray
    """Inner bin edges (quantiles of the reference); bins are (-inf, e0], (e0, e1], ... (ek, inf)."""
    shares: np.ndarray
    """Reference share of each of the ``len(edges) + 1`` bins."""
    values: np.ndarray
    """Sorted finite reference values (subsampled beyond :data:`KS_MAX_REFERENCE`), for KS."""
    n: int


@dataclass(frozen=True)
class CategoryReference:
    categories: list[str]
    shares: np.ndarray
    """Reference share of each category, in ``categories`` order."""
    n: int


@dataclass(frozen=True)
class FeatureDrift:
    psi: float | None
    """None when either side has no values."""
    level: DriftLevel | None
    ks_statistic: float | None
    ks_pvalue: float | None
    n_reference: int
    n_recent: int
    """Non-missing recent values compared."""
    missing_recent: int
    unseen_share: float | None = None
    """Categories: share of recent values the reference never had."""
    psi_noise: float | None = None
    """PSI expected from sampling alone (no drift): ``(k - 1) * (1/n_reference + 1/n_recent)``
    over the k occupied bins (the chi-square approximation); a PSI near it is noise."""

    def to_dict(self) -> dict[str, float | int | str | None]:
        return {
            "psi": self.psi, "level": self.level, "drifted": self.psi is not None and self.psi > SIGNIFICANT,
            "ks_statistic": self.ks_statistic, "ks_pvalue": self.ks_pvalue, "n_reference": self.n_reference,
            "n_recent": self.n_recent, "missing_recent": self.missing_recent, "unseen_share": self.unseen_share,
            "psi_noise": self.psi_noise,
        }


def _noise(ref_shares: np.ndarray, counts: np.ndarray, n_ref: int, n_recent: int) -> float:
    k = int(np.count_nonzero((ref_shares > 0) | (counts > 0)))
    return max(k - 1, 0) * (1.0 / n_ref + 1.0 / n_recent)


def _bin_index(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges, x, side="left")


def numeric_reference(values: pl.Series | np.ndarray | list[Any], bins: int = 10) -> NumericReference:
    """Quantile bins (at most ``bins``) and shares of the reference's finite values."""
    x, _missing = _finite_floats(values)
    x = np.sort(x)
    if x.size == 0:
        return NumericReference(np.empty(0), np.ones(1), x, 0)
    edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    counts = np.bincount(_bin_index(edges, x), minlength=edges.size + 1)
    sample = x
    if x.size > KS_MAX_REFERENCE:
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(x, KS_MAX_REFERENCE, replace=False))
    return NumericReference(edges, counts / x.size, sample, int(x.size))


def numeric_drift(reference: NumericReference, recent: pl.Series | np.ndarray | list[Any]) -> FeatureDrift:
    """PSI over the reference's bins and the KS test of ``recent`` against the reference."""
    from scipy.stats import ks_2samp

    x, missing = _finite_floats(recent)
    if x.size == 0 or reference.n == 0:
        return FeatureDrift(None, None, None, None, reference.n, int(x.size), missing)
    counts = np.bincount(_bin_index(reference.edges, x), minlength=reference.edges.size + 1)
    psi = psi_from_shares(reference.shares, counts / x.size)
    ks = ks_2samp(reference.values, x)
    return FeatureDrift(psi, drift_level(psi), float(ks.statistic), float(ks.pvalue), reference.n, int(x.size),
                        missing, psi_noise=_noise(reference.shares, counts, reference.n, int(x.size)))


def category_reference(values: pl.Series | np.ndarray | list[Any]) -> CategoryReference:
    """Frequencies of each category (as strings, see :func:`category_strings`) in the reference."""
    s, _missing = _present(values)
    counts = category_strings(s).value_counts(sort=True, name="n")
    n = int(counts["n"].sum()) if counts.height else 0
    cats = counts.get_column(counts.columns[0]).to_list()
    shares = counts["n"].to_numpy().astype(np.float64) / max(n, 1)
    return CategoryReference([str(c) for c in cats], shares, n)


def category_drift(reference: CategoryReference, recent: pl.Series | np.ndarray | list[Any]) -> FeatureDrift:
    """PSI over the reference categories plus one bucket for unseen values (reference share 0)."""
    s, missing = _present(recent)
    n = s.len()
    if n == 0 or reference.n == 0:
        return FeatureDrift(None, None, None, None, reference.n, n, missing)
    index = {c: i for i, c in enumerate(reference.categories)}
    unseen = len(index)
    strings = category_strings(s)
    n_unseen = int(unseen_mask(strings, reference.categories).sum())
    codes = strings.replace_strict(index, default=unseen, return_dtype=pl.Int64).to_numpy()
    counts = np.bincount(codes, minlength=unseen + 1)
    ref_shares = np.append(reference.shares, 0.0)
    psi = psi_from_shares(ref_shares, counts / n)
    return FeatureDrift(psi, drift_level(psi), None, None, reference.n, n, missing,
                        unseen_share=n_unseen / n, psi_noise=_noise(ref_shares, counts, reference.n, n))
