"""The promotion gate: may a challenger replace the champion?

Both models are scored on the same rows (the frozen test split, plus held-out feedback when
retraining). The challenger passes when its primary metric (``evaluate.metric``) beats the
champion's by at least ``evaluate.min_improvement`` (strictly, when that is 0: a tie keeps the
champion) and no guard metric (``evaluate.guard_metrics``) is worse than the champion's by more
than ``evaluate.tolerance``: a share of the champion's value for an unbounded metric (mae, rmse,
log_loss: each task's :attr:`~dataflywheel.tasks.Task.unbounded`; 0.01 allows 1 % worse, whatever the
target's units), an absolute amount for a bounded one (accuracy, f1, roc_auc, r2, ...). Every
metric gets a :class:`Check` with both values and a reason that says which tolerance applied.

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
from dataflywheel.evaluate.metrics import is_unbounded, primary_metric, task_metrics
from dataflywheel.tasks import get_task

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
    tolerance: Literal["relative", "absolute"] | None = None
    """Guards: how ``evaluate.tolerance`` applied (relative to the champion's value, or absolute)."""
    allowed: float | None = None
    """Guards: the largest regression allowed, in the metric's units."""


def tolerance_kind(metric: str) -> Literal["relative", "absolute"]:
    """``relative`` for an unbounded metric (:func:`is_unbounded`), ``absolute`` otherwise."""
    return "relative" if is_unbounded(metric) else "absolute"


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
    """The guard metrics for ``task``: ``auto`` picks the task's :attr:`~dataflywheel.tasks.Task.guards`;
    the primary metric is never its own guard. An unknown name raises :class:`ConfigError` at
    ``evaluate.guard_metrics``."""
    primary, _ = primary_metric(task, cfg.metric)
    names = list(get_task(task).guards) if cfg.guard_metrics == "auto" else list(cfg.guard_metrics)
    valid = task_metrics(task)
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


def _fmt(v: float | None, metric: str = "") -> str:
    """Four decimals for a bounded metric, six significant digits for an unbounded one."""
    if v is None:
        return "undefined"
    return f"{v:.6g}" if is_unbounded(metric) else f"{v:.4f}"


def _signed(v: float, metric: str) -> str:
    return f"{v:+.6g}" if is_unbounded(metric) else f"{v:+.4f}"


def check_primary(task: str, cfg: EvaluateConfig, challenger: dict[str, Any], champion: dict[str, Any]) -> Check:
    metric, higher = primary_metric(task, cfg.metric)
    ours, theirs = _value(challenger, metric), _value(champion, metric)
    word = "higher" if higher else "lower"
    if ours is None:
        return Check(metric, "primary", higher, ours, theirs, None, False, f"challenger {metric} is undefined")
    if theirs is None:
        return Check(metric, "primary", higher, ours, theirs, None, True,
                     f"{metric} {_fmt(ours, metric)}; champion's is undefined")
    gain = ours - theirs if higher else theirs - ours
    passed = gain > _EPS and gain >= cfg.min_improvement - _EPS
    if passed:
        reason = (f"{metric} {_fmt(ours, metric)} vs champion {_fmt(theirs, metric)} ({word} is better; "
                  f"gain {_signed(gain, metric)}, min improvement {cfg.min_improvement:g})")
    else:
        reason = (f"{metric} {_fmt(ours, metric)} does not beat champion {_fmt(theirs, metric)} by "
                  f"{cfg.min_improvement:g} (gain {_signed(gain, metric)}; {word} is better)")
    return Check(metric, "primary", higher, ours, theirs, gain, passed, reason)


def check_guard(task: str, name: str, tolerance: float, challenger: dict[str, Any],
                champion: dict[str, Any]) -> Check:
    higher = task_metrics(task)[name]
    ours, theirs = _value(challenger, name), _value(champion, name)
    if ours is None or theirs is None:
        return Check(name, "guard", higher, ours, theirs, None, True,
                     f"guard {name}: {_fmt(ours, name)} vs {_fmt(theirs, name)}: undefined, not checked")
    kind = tolerance_kind(name)
    allowed = tolerance * abs(theirs) if kind == "relative" else tolerance
    gain = ours - theirs if higher else theirs - ours
    passed = -gain <= allowed + _EPS
    if gain > _EPS:
        change = f"better by {_fmt(gain, name)}"
    elif gain >= -_EPS:
        change = "unchanged"
    elif kind == "relative":
        share = f"{-gain / abs(theirs):.2%}" if theirs else "inf %"
        change = (f"worse by {_fmt(-gain, name)} ({share}), {'within' if passed else 'beyond'} tolerance "
                  f"{tolerance * 100:.4g} % of the champion's value (relative: {name} is unbounded)")
    else:
        change = f"worse by {-gain:.4f}, {'within' if passed else 'beyond'} tolerance {tolerance:g} (absolute)"
    reason = f"guard {name} {_fmt(ours, name)} vs champion {_fmt(theirs, name)} ({change})"
    return Check(name, "guard", higher, ours, theirs, gain, passed, reason, kind, allowed)


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
        reason = (f"{primary.metric} tied at {_fmt(primary.champion, primary.metric)}; tie broken by {g.metric}: "
                  f"{_fmt(g.challenger, g.metric)} vs {_fmt(g.champion, g.metric)} ({outcome})")
        return Check(primary.metric, "primary", primary.higher_is_better, primary.challenger, primary.champion,
                     primary.gain, won, reason)
    return primary
