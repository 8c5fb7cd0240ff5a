"""The promotion gate: primary improvement, min_improvement, guard tolerance, ties, undefined values."""

from __future__ import annotations

import pytest

from dataflywheel.config import EvaluateConfig
from dataflywheel.errors import ConfigError
from dataflywheel.evaluate.gate import check_primary, gate, guard_metrics
from dataflywheel.evaluate.metrics import primary_metric

CHAMPION = {"roc_auc": 0.90, "accuracy": 0.85, "f1": 0.80, "log_loss": 0.40}


def cfg(**kw: object) -> EvaluateConfig:
    return EvaluateConfig(**kw)  # type: ignore[arg-type]


def test_better_primary_and_steady_guards_pass() -> None:
    result = gate("binary", cfg(), {**CHAMPION, "roc_auc": 0.93}, CHAMPION)
    assert result.passed and result.metric == "roc_auc"
    primary = result.checks[0]
    assert primary.role == "primary" and primary.gain == pytest.approx(0.03)
    assert [c.metric for c in result.checks[1:]] == ["accuracy", "f1", "log_loss"]
    assert all(c.passed for c in result.checks)


def test_tie_on_primary_keeps_the_champion() -> None:
    result = gate("binary", cfg(), dict(CHAMPION), CHAMPION)
    assert not result.passed
    assert "tied at 0.9000" in result.reasons[0] and "not better" in result.reasons[0]


def test_tie_at_the_ceiling_is_broken_by_the_first_guard() -> None:
    champion = {**CHAMPION, "roc_auc": 1.0}
    better = {**champion, "accuracy": 0.90, "log_loss": 0.2}
    result = gate("binary", cfg(), better, champion)
    assert result.passed and "tie broken by accuracy" in result.reasons[0]
    worse = {**champion, "accuracy": 0.84}
    assert not gate("binary", cfg(), worse, champion).passed
    # A demanded improvement cannot be met by a tie.
    assert not gate("binary", cfg(min_improvement=0.01), better, champion).passed


def test_guard_reasons_say_better_or_worse() -> None:
    challenger = {**CHAMPION, "roc_auc": 0.95, "log_loss": 0.10}
    reasons = gate("binary", cfg(), challenger, CHAMPION).reasons
    assert any("guard log_loss 0.1 vs champion 0.4" in r and "better by 0.3" in r for r in reasons)


def test_min_improvement_is_required() -> None:
    challenger = {**CHAMPION, "roc_auc": 0.92}
    assert not gate("binary", cfg(min_improvement=0.05), challenger, CHAMPION).passed
    assert gate("binary", cfg(min_improvement=0.02), challenger, CHAMPION).passed


def test_guard_regression_beyond_tolerance_rejects() -> None:
    challenger = {**CHAMPION, "roc_auc": 0.95, "accuracy": 0.83}  # accuracy -0.02
    result = gate("binary", cfg(tolerance=0.01), challenger, CHAMPION)
    assert not result.passed
    failed = [c for c in result.checks if not c.passed]
    assert [c.metric for c in failed] == ["accuracy"]
    assert "worse by 0.0200, beyond tolerance 0.01" in failed[0].reason
    assert gate("binary", cfg(tolerance=0.03), challenger, CHAMPION).passed


def test_unbounded_guards_use_a_tolerance_relative_to_the_champion() -> None:
    # Prices around 250,000: an MAE 31 worse is 0.1 % worse, well within a 1 % tolerance.
    champion = {"rmse": 52_000.0, "mae": 31_000.0, "r2": 0.80}
    challenger = {"rmse": 51_500.0, "mae": 31_031.09, "r2": 0.795}
    result = gate("regression", cfg(tolerance=0.01), challenger, champion)
    assert result.passed, result.reasons
    mae, r2 = result.checks[1], result.checks[2]
    assert (mae.metric, mae.tolerance, mae.allowed) == ("mae", "relative", pytest.approx(310.0))
    assert "worse by 31.09 (0.10%), within tolerance 1 % of the champion's value (relative" in mae.reason
    assert (r2.metric, r2.tolerance, r2.allowed) == ("r2", "absolute", 0.01)
    assert "worse by 0.0050, within tolerance 0.01 (absolute)" in r2.reason
    # 2 % worse is beyond 1 % of the champion's value, in any units
    for scale in (1.0, 1e-3, 1e6):
        champ = {k: v * scale if k != "r2" else v for k, v in champion.items()}
        worse = {**champ, "rmse": champ["rmse"] * 0.9, "mae": champ["mae"] * 1.02}
        verdict = gate("regression", cfg(tolerance=0.01), worse, champ)
        assert not verdict.passed and "beyond tolerance 1 %" in verdict.checks[1].reason
    loss = gate("binary", cfg(tolerance=0.1), {**CHAMPION, "roc_auc": 0.95, "log_loss": 0.43}, CHAMPION)
    assert loss.passed and loss.checks[3].tolerance == "relative"  # 0.03 worse: 7.5 % of 0.40
    accuracy = loss.checks[1]
    assert accuracy.tolerance == "absolute" and accuracy.allowed == 0.1


def test_lower_is_better_guard_direction() -> None:
    worse_loss = {**CHAMPION, "roc_auc": 0.95, "log_loss": 0.45}
    better_loss = {**CHAMPION, "roc_auc": 0.95, "log_loss": 0.10}
    assert not gate("binary", cfg(tolerance=0.01), worse_loss, CHAMPION).passed
    assert gate("binary", cfg(tolerance=0.01), better_loss, CHAMPION).passed


def test_regression_task_primary_is_rmse_lower_is_better() -> None:
    champion = {"rmse": 2.0, "mae": 1.5, "r2": 0.6}
    assert gate("regression", cfg(), {"rmse": 1.8, "mae": 1.5, "r2": 0.6}, champion).passed
    assert not gate("regression", cfg(), {"rmse": 2.2, "mae": 1.4, "r2": 0.7}, champion).passed


def test_undefined_values() -> None:
    assert not gate("binary", cfg(), {**CHAMPION, "roc_auc": None}, CHAMPION).passed
    assert gate("binary", cfg(), CHAMPION, {**CHAMPION, "roc_auc": None}).passed
    # An undefined guard is reported but does not block.
    result = gate("binary", cfg(), {**CHAMPION, "roc_auc": 0.95, "f1": None}, CHAMPION)
    assert result.passed and "undefined" in result.checks[2].reason


def test_configured_guards_and_unknown_names() -> None:
    assert guard_metrics("binary", cfg(guard_metrics=["brier", "roc_auc"])) == ["brier"]
    assert guard_metrics("multiclass", cfg()) == ["accuracy", "log_loss"]
    with pytest.raises(ConfigError, match="evaluate.guard_metrics"):
        guard_metrics("binary", cfg(guard_metrics=["rmse"]))


def is_better(task: str, metric: str, challenger: float | None, champion: float | None,
              min_improvement: float) -> bool:
    """The gate's primary check on one metric value per model."""
    name, _ = primary_metric(task, metric)
    check = check_primary(task, cfg(metric=metric, min_improvement=min_improvement),
                          {name: challenger}, {name: champion})
    return check.passed


def test_primary_check_needs_a_strict_gain_of_the_margin() -> None:
    assert is_better("binary", "auto", 0.91, 0.90, 0.0)
    assert not is_better("binary", "auto", 0.90, 0.90, 0.0)  # a tie keeps the champion
    assert not is_better("binary", "auto", 0.905, 0.90, 0.01)
    assert is_better("binary", "auto", 0.91, 0.90, 0.01)  # exactly the margin (float-safe)
    assert is_better("regression", "rmse", 1.0, 2.0, 0.5)
    assert not is_better("regression", "rmse", 2.0, 1.0, 0.0)
    assert is_better("regression", "r2", 0.8, 0.7, 0.0)
    assert is_better("binary", "roc_auc", 0.6, None, 0.0)
    assert not is_better("binary", "roc_auc", None, 0.6, 0.0)
    assert not is_better("binary", "roc_auc", float("nan"), 0.6, 0.0)
