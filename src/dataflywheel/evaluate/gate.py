"""The promotion gate: may a challenger replace the champion?

Both models are scored on the same rows (the frozen test split, plus held-out feedback when
retraining). The challenger passes when its primary metric (``evaluate.metric``) beats the
champion's by at least ``evaluate.min_improvement`` (strictly, when that is 0: a tie keeps the
champion) and no guard metric (``evaluate.guard_metrics``) is worse than the champion's by more
than ``evaluate.tolerance``. Every metric gets a :class:`Check` with both values and a reason.

A tie on the primary metric (with ``min_improvement`` 0) is broken by the first guard metric
defined for both models: otherwise a champion at a metric's ceiling (ROC AUC 1.0 on a small
test split is common) could never be replaced, however much better a challenger's accuracy or
log loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from dataflywheel.config import EvaluateConfig
from dataflywheel.errors import ConfigError
from dataflywheel.evaluate.metrics import METRICS, primary_metric

AUTO_GUARDS: dict[str, tuple[str, ...]] = {
    "binary": ("accuracy", "f1", "log_loss"),
    "multiclass": ("accuracy", "log_loss"),
    "regression": ("mae", "r2"),
}
_EPS = 1e-12


@dataclass
class Check:
    metric: str
    role: Literal["primary", "guard"]
    higher_is_better: bool
    challenger: float | None
    champion: float | None
    gain: float | None
    """Challenger minus champion, signed so that positive is better; None when undefined."""
    passed: bool
    reason: str


@dataclass
class GateResult:
    passed: bool
    metric: str
    checks: list[Check]

    @property
    def reasons(self) -> list[str]:
        """The primary check's reason first, then every guard's."""
        return [c.reason for c in self.checks]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "metric": self.metric, "checks": [asdict(c) for c in self.checks]}


def guard_metrics(task: str, cfg: EvaluateConfig) -> list[str]:
    """The guard metrics for ``task``: ``auto`` picks :data:`AUTO_GUARDS`; the primary metric is
    never its own guard. An unknown name raises :class:`ConfigError` at ``evaluate.guard_metrics``."""
    primary, _ = primary_metric(task, cfg.metric)
    names = list(AUTO_GUARDS[task]) if cfg.guard_metrics == "auto" else list(cfg.guard_metrics)
    valid = METRICS[task]
    for name in names:
        if name not in valid:
            raise ConfigError(f"unknown metric {name!r} for a {task} task", where="evaluate.guard_metrics",
                              fix=f"use auto or some of: {', '.join(valid)}")
    return [n for n in dict.fromkeys(names) if n != primary]


def _value(metrics: dict[str, Any], name: str) -> float | None:
    v = metrics.get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _fmt(v: float | None) -> str:
    return "undefined" if v is None else f"{v:.4f}"


def check_primary(task: str, cfg: EvaluateConfig, challenger: dict[str, Any], champion: dict[str, Any]) -> Check:
    metric, higher = primary_metric(task, cfg.metric)
    ours, theirs = _value(challenger, metric), _value(champion, metric)
    word = "higher" if higher else "lower"
    if ours is None:
        return Check(metric, "primary", higher, ours, theirs, None, False, f"challenger {metric} is undefined")
    if theirs is None:
        return Check(metric, "primary", higher, ours, theirs, None, True,
                     f"{metric} {ours:.4f}; champion's is undefined")
    gain = ours - theirs if higher else theirs - ours
    passed = gain > _EPS and gain >= cfg.min_improvement - _EPS
    if passed:
        reason = (f"{metric} {ours:.4f} vs champion {theirs:.4f} ({word} is better; "
                  f"gain {gain:+.4f}, min improvement {cfg.min_improvement:g})")
    else:
        reason = (f"{metric} {ours:.4f} does not beat champion {theirs:.4f} by {cfg.min_improvement:g} "
                  f"(gain {gain:+.4f}; {word} is better)")
    return Check(metric, "primary", higher, ours, theirs, gain, passed, reason)


def check_guard(task: str, name: str, tolerance: float, challenger: dict[str, Any],
                champion: dict[str, Any]) -> Check:
    higher = METRICS[task][name]
    ours, theirs = _value(challenger, name), _value(champion, name)
    if ours is None or theirs is None:
        return Check(name, "guard", higher, ours, theirs, None, True,
                     f"guard {name}: {_fmt(ours)} vs {_fmt(theirs)}: undefined, not checked")
    gain = ours - theirs if higher else theirs - ours
    passed = -gain <= tolerance + _EPS
    if gain > _EPS:
        change = f"better by {gain:.4f}"
    elif gain >= -_EPS:
        change = "unchanged"
    else:
        change = f"worse by {-gain:.4f}, {'within' if passed else 'beyond'} tolerance {tolerance:g}"
    reason = f"guard {name} {ours:.4f} vs champion {theirs:.4f} ({change})"
    return Check(name, "guard", higher, ours, theirs, gain, passed, reason)


def gate(task: str, cfg: EvaluateConfig, challenger: dict[str, Any], champion: dict[str, Any]) -> GateResult:
    """Decide from two metric dicts computed on the same rows (see the module docstring)."""
    primary = check_primary(task, cfg, challenger, champion)
    guards = [check_guard(task, n, cfg.tolerance, challenger, champion) for n in guard_metrics(task, cfg)]
    if not primary.passed and primary.gain is not None and abs(primary.gain) <= _EPS and cfg.min_improvement <= _EPS:
        primary = _break_tie(primary, guards)
    checks = [primary, *guards]
    return GateResult(all(c.passed for c in checks), primary.metric, checks)


def _break_tie(primary: Check, guards: list[Check]) -> Check:
    """A tied primary metric passes when the first guard defined for both models is better."""
    for g in guards:
        if g.gain is None:
            continue
        won = g.gain > _EPS
        outcome = "better" if won else "not better"
        reason = (f"{primary.metric} tied at {primary.champion:.4f}; tie broken by {g.metric}: "
                  f"{g.challenger:.4f} vs {g.champion:.4f} ({outcome})")
        return Check(primary.metric, "primary", primary.higher_is_better, primary.challenger, primary.champion,
                     primary.gain, won, reason)
    return primary
