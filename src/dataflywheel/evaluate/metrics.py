"""Evaluation metrics, the decision threshold and champion/challenger comparison.

Every number comes from scikit-learn. Results are JSON-safe: plain ``float``/``int``/``list``
values, with ``None`` wherever a metric is undefined for the data (one class in ``y_true``, no
predicted positives, a constant target) instead of NaN, a crash or a warning.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from dataflywheel.errors import ConfigError, DataError


def task_metrics(task: str) -> dict[str, bool]:
    """Metric name -> higher is better for ``task``; the first is the ``auto`` choice."""
    from dataflywheel.tasks import get_task

    return dict(get_task(task).metrics)


def is_unbounded(metric: str) -> bool:
    """Whether ``metric`` has no fixed scale (in the target's units, or growing without limit)
    for the task that defines it: the gate's guard tolerance is relative to the champion's
    value for these, absolute for the others (whose values lie in a fixed range such as [0, 1])."""
    from dataflywheel.tasks import all_tasks

    return any(metric in t.unbounded for t in all_tasks())


def _known(metric: str) -> bool:
    from dataflywheel.tasks import all_tasks

    return any(metric in t.metrics for t in all_tasks())


def format_metric(name: str, value: float | None) -> str:
    """``value`` as printed: four decimals for a bounded metric (accuracy, roc_auc, r2, ...), six
    significant digits for anything else (losses, unbounded metrics in the target's units such
    as a price's rmse, counts); ``-`` when undefined. A ``val_`` prefix is ignored."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        return "-"
    if not math.isfinite(float(value)):
        return str(float(value))
    base = name.removeprefix("val_")
    bounded = _known(base) and not is_unbounded(base)
    return f"{value:.4f}" if bounded else f"{value:.6g}"


def round_significant(values: np.ndarray, digits: int = 6) -> np.ndarray:
    """``values`` (float) rounded to ``digits`` significant digits each; NaN and inf unchanged."""
    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x) & (x != 0)
    magnitude = np.zeros_like(x)
    magnitude[finite] = np.floor(np.log10(np.abs(x[finite])))
    decimals = np.clip(digits - 1 - magnitude, -300, 300)
    scale = np.power(10.0, decimals)
    out = x.copy()
    out[finite] = np.round(x[finite] * scale[finite]) / scale[finite]
    return out


def to_json_safe(value: Any) -> Any:
    """``value`` with numpy scalars/arrays turned into Python ones and NaN/inf into ``None``."""
    if isinstance(value, dict):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def _arrays(y_true: Any, scores: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(scores, dtype=np.float64)
    if len(y) == 0:
        raise DataError(
            "no rows to evaluate", where=what, fix="use more data or a larger data.split.test/valid"
        )
    if s.shape[0] != len(y):
        raise ValueError(f"{what}: y_true has {len(y)} rows but scores have {s.shape[0]}")
    return y, s


def _binary_labels(y_true: Any) -> np.ndarray:
    y = np.asarray(y_true).reshape(-1)
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        raise ValueError("binary y_true must hold only 0 and 1 (or False/True)")
    return y.astype(np.int64)


def _p_pos(scores: np.ndarray) -> np.ndarray:
    """Positive-class probability from ``(n,)`` or ``(n, 2)`` scores."""
    if scores.ndim == 2 and scores.shape[1] == 2:
        return scores[:, 1]
    if scores.ndim != 1:
        raise ValueError(f"binary scores must be shape (n,) or (n, 2), got {scores.shape}")
    return scores


def choose_threshold(
    y_true: np.ndarray, p_pos: np.ndarray, criterion: Literal["f1", "youden"] = "f1"
) -> float:
    """Decision threshold maximising ``criterion`` on the given (VALIDATION) split.

    Predictions are positive when ``p_pos >= threshold``. ``f1`` maximises F1 over the
    precision-recall curve; ``youden`` maximises TPR - FPR over the ROC curve. Returns 0.5
    when the choice is undefined (fewer than two classes, constant scores, no rows).
    """
    from sklearn import metrics as skm

    if criterion not in ("f1", "youden"):
        raise ConfigError(
            f"unknown threshold criterion {criterion!r}", where="threshold", fix="use f1 or youden"
        )
    y = _binary_labels(y_true)
    p = _p_pos(np.asarray(p_pos, dtype=np.float64))
    if len(y) == 0 or len(np.unique(y)) < 2 or len(np.unique(p)) < 2:
        return 0.5
    if criterion == "f1":
        precision, recall, thresholds = skm.precision_recall_curve(y, p)
        precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
        denom = precision + recall
        score = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    else:
        fpr, tpr, thresholds = skm.roc_curve(y, p, drop_intermediate=False)
        score = np.where(np.isfinite(thresholds), tpr - fpr, -np.inf)
    return _middle_of_best(p, thresholds, score)


def _middle_of_best(p: np.ndarray, thresholds: np.ndarray, score: np.ndarray) -> float:
    """The centre of the interval of thresholds that reach the best score.

    Every threshold in (highest score below the lowest best threshold, highest best threshold]
    classifies the validation rows identically; its edges sit on a validation score, where a
    slightly different test score flips the decision. The centre of the gap generalises better.
    """
    keep = np.isfinite(thresholds)
    t, sc = thresholds[keep], score[keep]
    order = np.argsort(t)
    t, sc = t[order], sc[order]
    is_best = sc >= np.max(sc) - 1e-12
    start = end = int(np.argmax(is_best))  # the lowest best threshold, then its contiguous run
    while end + 1 < len(t) and is_best[end + 1]:
        end += 1
    lo, hi = float(t[start]), float(t[end])
    below = p[p < lo]
    floor = float(np.max(below)) if below.size else max(0.0, lo - (hi - lo) - 1e-6)
    return float((floor + hi) / 2) if hi > floor else lo


def binary_metrics(y_true: Any, p_pos: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Metrics of positive-class probabilities ``p_pos`` against 0/1 labels ``y_true``.

    Keys: accuracy, precision, recall, f1 (at ``p_pos >= threshold``), roc_auc, pr_auc
    (average precision), log_loss, brier, confusion_matrix ([[tn, fp], [fn, tp]]), threshold,
    n, positive_rate (share of positives in ``y_true``).
    """
    from sklearn import metrics as skm

    y_raw, scores = _arrays(y_true, p_pos, "binary evaluation")
    y = _binary_labels(y_raw)
    p = np.clip(_p_pos(scores), 0.0, 1.0)
    pred = (p >= threshold).astype(np.int64)
    both = len(np.unique(y)) == 2
    has_pos = bool(y.any())
    prf = {"zero_division": np.nan}
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, **prf),
        "recall": skm.recall_score(y, pred, **prf),
        "f1": skm.f1_score(y, pred, **prf),
        "roc_auc": skm.roc_auc_score(y, p) if both else None,
        "pr_auc": skm.average_precision_score(y, p) if has_pos else None,
        "log_loss": skm.log_loss(y, p, labels=[0, 1]),
        "brier": skm.brier_score_loss(y, p, labels=[0, 1]),
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=[0, 1]),
        "threshold": threshold,
        "n": len(y),
        "positive_rate": y.mean(),
    }
    safe: dict[str, Any] = to_json_safe(out)
    return safe


def multiclass_metrics(y_true: Any, proba: Any, class_names: list[str]) -> dict[str, Any]:
    """Metrics of class probabilities ``proba`` (n, k) against integer labels 0..k-1.

    Keys: accuracy, macro_f1, log_loss, per_class (scikit-learn's ``classification_report``
    as a dict keyed by class name; undefined cells are ``None``), confusion_matrix (rows =
    true class, in ``class_names`` order), n.
    """
    from sklearn import metrics as skm

    y, p = _arrays(y_true, proba, "multiclass evaluation")
    if p.ndim != 2 or p.shape[1] != len(class_names):
        raise ValueError(f"proba must be (n, {len(class_names)}) for {class_names}, got {p.shape}")
    if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= len(class_names):
        raise ValueError(f"multiclass y_true must be integers in 0..{len(class_names) - 1}")
    p = np.clip(p, 0.0, None)
    p = p / np.where(p.sum(axis=1, keepdims=True) > 0, p.sum(axis=1, keepdims=True), 1.0)
    labels = list(range(len(class_names)))
    pred = p.argmax(axis=1)
    report = skm.classification_report(
        y, pred, labels=labels, target_names=class_names, output_dict=True, zero_division=np.nan
    )
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "macro_f1": skm.f1_score(y, pred, average="macro", zero_division=0),
        "log_loss": skm.log_loss(y, p, labels=labels),
        "per_class": report,
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=labels),
        "n": len(y),
    }
    safe: dict[str, Any] = to_json_safe(out)
    return safe


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, Any]:
    """MAE, RMSE and R² of ``y_pred``; R² is None for fewer than 2 rows or a constant target."""
    from sklearn import metrics as skm

    y, pred = _arrays(y_true, y_pred, "regression evaluation")
    y = y.astype(np.float64)
    pred = pred.reshape(len(y), -1)[:, 0] if pred.ndim > 1 else pred
    r2_defined = len(y) >= 2 and np.ptp(y) > 0
    out = {
        "mae": skm.mean_absolute_error(y, pred),
        "rmse": skm.root_mean_squared_error(y, pred),
        "r2": skm.r2_score(y, pred) if r2_defined else None,
        "n": len(y),
    }
    safe: dict[str, Any] = to_json_safe(out)
    return safe


def evaluate_predictions(
    task: str,
    y_true: Any,
    scores: Any,
    *,
    class_names: list[str] | None = None,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """The task's metrics (:meth:`Task.evaluate`): ``scores`` are p_pos (or (n, 2) proba) for
    binary, (n, k) proba for multiclass (``class_names`` default to "0".."k-1"), predictions for
    regression. An unknown task raises :class:`ConfigError` at ``model.task``."""
    from dataflywheel.tasks import get_task

    return get_task(task).evaluate(y_true, scores, class_names, threshold)


def primary_metric(task: str, name: str = "auto") -> tuple[str, bool]:
    """``(metric name, higher_is_better)`` used to compare models for ``task``.

    ``auto`` means the task's first metric: roc_auc (binary), macro_f1 (multiclass) or rmse
    (regression). An unknown name raises :class:`ConfigError` at ``evaluate.metric`` listing the
    valid names.
    """
    valid = task_metrics(task)
    if name == "auto":
        name = next(iter(valid))
    if name not in valid:
        raise ConfigError(
            f"unknown metric {name!r} for a {task} task",
            where="evaluate.metric",
            fix=f"use one of: auto, {', '.join(valid)}",
        )
    return name, valid[name]
