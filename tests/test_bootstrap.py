"""The paired bootstrap interval of a difference between two models scored item by item, against
SciPy's percentile bootstrap of the mean difference."""

from __future__ import annotations

import numpy as np
import pytest

from dataflywheel.evaluate.bootstrap import Interval, paired_interval


def test_the_interval_is_scipys_percentile_bootstrap_of_the_mean_difference() -> None:
    from scipy import stats

    rng = np.random.default_rng(7)
    theirs = rng.uniform(0, 1, 240)
    ours = np.clip(theirs + rng.normal(0.05, 0.2, 240), 0, 1)
    mine = paired_interval(ours, theirs, n_resamples=20_000, seed=1)
    ref = stats.bootstrap((ours, theirs), lambda a, b, axis=-1: np.mean(a - b, axis=axis), paired=True,
                          vectorized=True, method="percentile", confidence_level=0.95, n_resamples=20_000,
                          random_state=np.random.default_rng(2)).confidence_interval
    assert mine.difference == pytest.approx(float(np.mean(ours - theirs)))
    assert mine.low == pytest.approx(ref.low, abs=0.003) and mine.high == pytest.approx(ref.high, abs=0.003)
    assert mine.low < mine.difference < mine.high and mine.n == 240 and mine.confidence == 0.95
    assert mine.ours == pytest.approx(ours.mean()) and mine.theirs == pytest.approx(theirs.mean())
    assert paired_interval(ours, theirs, n_resamples=20_000, seed=1) == mine  # seeded: the same interval


def test_a_clear_gain_excludes_zero_and_a_tie_does_not() -> None:
    rng = np.random.default_rng(0)
    base = (rng.uniform(size=200) < 0.3).astype(float)  # exact matches of a weak model
    tuned = np.maximum(base, rng.uniform(size=200) < 0.6)
    gain = paired_interval(tuned, base)
    assert gain.excludes_zero and gain.low > 0 and gain.to_dict()["excludes_zero"] is True
    same = paired_interval(base, base)
    assert (same.difference, same.low, same.high) == (0.0, 0.0, 0.0) and not same.excludes_zero
    noise = paired_interval(rng.uniform(size=200), rng.uniform(size=200))
    assert noise.low < 0 < noise.high and not noise.excludes_zero


def test_narrower_with_more_items_and_lower_confidence() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.uniform(size=1000), rng.uniform(size=1000)
    wide, narrow = paired_interval(a[:100], b[:100]), paired_interval(a, b)
    assert narrow.high - narrow.low < wide.high - wide.low
    loose = paired_interval(a, b, confidence=0.8)
    assert loose.high - loose.low < narrow.high - narrow.low


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="equal"):
        paired_interval([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="non-empty"):
        paired_interval([], [])
    with pytest.raises(ValueError, match="confidence"):
        paired_interval([1.0], [0.0], confidence=95)


def test_describe_names_both_values_the_difference_and_the_interval() -> None:
    iv = Interval(difference=0.294, low=0.262, high=0.327, confidence=0.95, n=240, ours=0.412, theirs=0.118)
    assert iv.describe("rouge_l", "base") == ("rouge_l 0.4120 vs base 0.1180 (+0.2940, 95 % interval "
                                              "[+0.2620, +0.3270]) on 240 items")
