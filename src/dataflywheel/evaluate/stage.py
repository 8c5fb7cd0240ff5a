"""The evaluation stage: score a predictor on a split, choose the threshold, compare models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from dataflywheel.config import FlywheelConfig


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    y_true: np.ndarray
    scores: np.ndarray


def true_values(predictor: Any, df: pl.DataFrame, target: str) -> np.ndarray:
    """Targets as the metrics expect them: class indices, or raw values for regression."""
    col = df.get_column(target)
    if predictor.task == "regression":
        return col.cast(pl.Float64).to_numpy()
    return np.asarray(predictor.target.transform(col)).astype(np.int64)


def evaluate_split(predictor: Any, df: pl.DataFrame, target: str) -> Evaluation:
    from dataflywheel.evaluate.metrics import evaluate_predictions

    scores, _unknown = predictor.scores(df)
    y = true_values(predictor, df, target)
    metrics = evaluate_predictions(
        predictor.task, y, scores, class_names=predictor.class_names, threshold=predictor.threshold
    )
    return Evaluation(metrics, y, scores)


def choose_threshold(predictor: Any, valid: pl.DataFrame, target: str) -> float:
    """Decision threshold for binary models, chosen on the validation split (0.5 otherwise)."""
    from dataflywheel.evaluate.metrics import choose_threshold as choose

    if predictor.task != "binary" or valid.height == 0:
        return 0.5
    scores, _ = predictor.scores(valid)
    return float(choose(true_values(predictor, valid, target), scores))


@dataclass
class Verdict:
    decision: str
    """``champion`` (first model), ``promoted`` or ``rejected``."""
    metric: str
    challenger: float | None
    champion: float | None
    champion_version: int | None
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def compare_to_champion(
    cfg: FlywheelConfig, task: str, challenger_metrics: dict[str, Any], champion: Any | None,
    champion_version: int | None, test: pl.DataFrame,
) -> Verdict:
    """Evaluate the champion on the same test split and decide whether the challenger wins."""
    from dataflywheel.evaluate.metrics import is_better, primary_metric

    metric, higher = primary_metric(task, cfg.evaluate.metric)
    ours = challenger_metrics.get(metric)
    if champion is None:
        return Verdict("champion", metric, ours, None, None, ["first model: becomes champion"])
    if champion.task != task:
        return Verdict("promoted", metric, ours, None, champion_version,
                       [f"champion solves a different task ({champion.task}); replaced"])
    theirs = evaluate_split(champion, test, cfg.data.target).metrics.get(metric)
    if ours is None:
        return Verdict("rejected", metric, ours, theirs, champion_version, [f"challenger {metric} is undefined"])
    if theirs is None or is_better(task, metric, ours, theirs, cfg.evaluate.min_improvement):
        word = "higher" if higher else "lower"
        reason = f"{metric} {ours:.4f} vs champion {theirs if theirs is None else round(theirs, 4)} ({word} is better"
        reason += f", min improvement {cfg.evaluate.min_improvement:g})"
        return Verdict("promoted", metric, ours, theirs, champion_version, [reason])
    reason = f"{metric} {ours:.4f} does not beat champion {theirs:.4f} by {cfg.evaluate.min_improvement:g}"
    return Verdict("rejected", metric, ours, theirs, champion_version, [reason])
