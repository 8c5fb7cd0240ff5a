"""The evaluation stage: score a predictor on a split, choose the threshold, compare models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from dataflywheel.config import FlywheelConfig

if TYPE_CHECKING:
    from dataflywheel.registry.predictor import Predictor


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    y_true: np.ndarray
    scores: np.ndarray


def true_values(predictor: Predictor, df: pl.DataFrame, target: str) -> np.ndarray:
    """Targets as the metrics expect them (:meth:`Task.true_values`): class indices, or raw
    values for regression."""
    from dataflywheel.tasks import get_task

    return get_task(predictor.task).true_values(predictor.target, df.get_column(target))


def evaluate_split(predictor: Predictor, df: pl.DataFrame, target: str, settings: Any = None, *,
                   pairs: pl.DataFrame | None = None) -> Evaluation:
    """The metrics of ``predictor`` on ``df``: of its scores, plus the task's answer metrics
    (:meth:`Task.answer_metrics`; ``settings`` is the ``evaluate`` section) and, given held-out
    preference ``pairs``, its pair metrics (:meth:`Task.pair_metrics`)."""
    from dataflywheel.evaluate.metrics import evaluate_predictions
    from dataflywheel.tasks import get_task

    scores, _unknown = predictor.scores(df)
    y = true_values(predictor, df, target)
    metrics = evaluate_predictions(
        predictor.task, y, scores, class_names=predictor.class_names, threshold=predictor.threshold
    )
    kind = get_task(predictor.task)
    metrics |= kind.answer_metrics(predictor, df, target, settings)
    if pairs is not None and pairs.height:
        metrics |= kind.pair_metrics(predictor, pairs)
    return Evaluation(metrics, y, scores)


def choose_threshold(predictor: Predictor, valid: pl.DataFrame, target: str) -> float:
    """Decision threshold for a task that uses one (binary), chosen on the validation split
    (0.5 otherwise)."""
    from dataflywheel.tasks import get_task

    task = get_task(predictor.task)
    if not task.uses_threshold or valid.height == 0:
        return 0.5
    scores, _ = predictor.scores(valid)
    return float(task.choose_threshold(true_values(predictor, valid, target), scores))


@dataclass
class Verdict:
    decision: str
    """``champion`` (first model), ``promoted`` or ``rejected``."""
    metric: str
    challenger: float | None
    champion: float | None
    champion_version: int | None
    reasons: list[str]
    checks: list[dict[str, Any]] = field(default_factory=list)
    """One entry per gated metric (see :class:`~dataflywheel.evaluate.gate.Check`)."""
    eval_rows: dict[str, int] = field(default_factory=dict)
    """Rows both models were scored on: ``test`` and ``feedback_holdout``."""
    champion_answers: dict[str, str] = field(default_factory=dict)
    """Generation models: the champion's answers to the sample prompts (prompt -> answer), shown
    beside the challenger's in its report."""
    differences: list[dict[str, Any]] = field(default_factory=list)
    """Generation models: the prompts where the two models' answers differ most, with both
    answers, the reference and the judge's score (:meth:`Task.compare_answers`)."""
    base_metrics: dict[str, Any] = field(default_factory=dict)
    """A first version built on a pretrained base (:mod:`~dataflywheel.evaluate.baseline`): the
    base model's metrics on the same rows (its sample answers and item scores included)."""
    intervals: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per metric with item scores: the paired bootstrap interval of the challenger's value minus
    the champion's (or, for a first version, the base's); see :class:`~dataflywheel.evaluate.bootstrap.Interval`."""

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def compare_to_champion(
    cfg: FlywheelConfig, task: str, challenger_metrics: dict[str, Any], champion: Predictor | None,
    champion_version: int | None, test: pl.DataFrame, *, eval_rows: dict[str, int] | None = None,
    pairs: pl.DataFrame | None = None, challenger: Predictor | None = None, base: Predictor | None = None,
) -> Verdict:
    """Score the champion on the rows the challenger was scored on (``test``) and apply the
    promotion gate (:mod:`dataflywheel.evaluate.gate`) to the two models' metrics, with paired
    intervals of the differences where the metrics hold item scores. Without a champion the
    challenger becomes it; ``base`` (its base model, :func:`~dataflywheel.evaluate.baseline.base_predictor`)
    is then scored on the same rows and compared, for the record."""
    from dataflywheel.evaluate import baseline
    from dataflywheel.evaluate.gate import gate
    from dataflywheel.evaluate.metrics import primary_metric

    rows = eval_rows or {"test": test.height}
    metric, _higher = primary_metric(task, cfg.evaluate.metric)
    ours = challenger_metrics.get(metric)
    if champion is None:
        reasons = ["first model: becomes champion"]
        if base is None:
            return Verdict("champion", metric, ours, None, None, reasons, eval_rows=rows)
        base_metrics = evaluate_split(base, test, cfg.data.target, cfg.evaluate).metrics
        found = baseline.intervals(challenger_metrics, base_metrics)
        if found:
            reasons.append(f"beside its base model: {baseline.describe(found, 'base')}")
        return Verdict("champion", metric, ours, None, None, reasons, eval_rows=rows, base_metrics=base_metrics,
                       intervals=found)
    if champion.task != task:
        return Verdict("promoted", metric, ours, None, champion_version,
                       [f"champion solves a different task ({champion.task}); replaced"], eval_rows=rows)
    theirs = evaluate_split(champion, test, cfg.data.target, cfg.evaluate, pairs=pairs).metrics
    differences: list[dict[str, Any]] = []
    if challenger is not None:
        from dataflywheel.tasks import get_task

        ours_more, theirs_more, differences = get_task(task).compare_answers(challenger, champion, test,
                                                                              cfg.data.target, cfg.evaluate)
        challenger_metrics = {**challenger_metrics, **ours_more}
        theirs = {**theirs, **theirs_more}
    result = gate(task, cfg.evaluate, challenger_metrics, theirs)
    checks = result.to_dict()["checks"]
    answers = {str(a["prompt"]): str(a["answer"]) for a in theirs.get("answer_samples") or []}
    return Verdict("promoted" if result.passed else "rejected", metric, challenger_metrics.get(metric),
                   theirs.get(metric), champion_version, result.reasons, checks, rows, answers, differences,
                   intervals=baseline.intervals(challenger_metrics, theirs))
