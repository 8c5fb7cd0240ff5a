from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from dataflywheel.errors import ConfigError, DataError
from dataflywheel.evaluate.metrics import (
    binary_metrics,
    choose_threshold,
    evaluate_predictions,
    multiclass_metrics,
    primary_metric,
    regression_metrics,
)


def _plain(value: object) -> bool:
    """True when ``value`` holds only JSON-native Python types."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or type(value) in (int, bool, str)


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.fixture
def noisy_binary() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + rng.normal(0.3, 0.2, 300), 0, 1)
    return y, p


def test_binary_by_hand():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    m = binary_metrics(y, p, threshold=0.5)
    # predictions 0 1 0 1 1: tn=1 fp=1 fn=1 tp=2
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["roc_auc"] == pytest.approx(5 / 6)  # 5 of 6 (pos, neg) pairs ordered right
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert m["n"] == 5 and m["positive_rate"] == pytest.approx(0.6) and m["threshold"] == 0.5


def test_binary_matches_sklearn(noisy_binary):
    y, p = noisy_binary
    m = binary_metrics(y, p, threshold=0.4)
    pred = (p >= 0.4).astype(int)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()


def test_binary_accepts_two_column_proba(noisy_binary):
    y, p = noisy_binary
    proba = np.column_stack([1 - p, p])
    assert evaluate_predictions("binary", y, proba) == binary_metrics(y, p)


def test_threshold_improves_f1_on_shifted_scores(no_warnings):
    # every positive scores below 0.5 but above every negative: 0.5 misses them all.
    y = np.array([0] * 6 + [1] * 4)
    p = np.array([0.05, 0.1, 0.15, 0.2, 0.22, 0.25, 0.3, 0.35, 0.4, 0.45])
    assert binary_metrics(y, p, 0.5)["f1"] == 0.0
    for criterion in ("f1", "youden"):
        t = choose_threshold(y, p, criterion)
        assert 0.25 < t <= 0.3
        assert binary_metrics(y, p, t)["f1"] == pytest.approx(1.0)


def test_chosen_threshold_is_f1_optimal(noisy_binary):
    y, p = noisy_binary
    t = choose_threshold(y, p, "f1")
    best = binary_metrics(y, p, t)["f1"]
    assert best > binary_metrics(y, p, 0.5)["f1"]
    pred = p[None, :] >= np.unique(p)[:, None]  # one row per candidate threshold
    tp = (pred & (y == 1)).sum(axis=1)
    f1 = 2 * tp / (pred.sum(axis=1) + (y == 1).sum())
    assert best == pytest.approx(f1.max())


@pytest.mark.parametrize(
    "y, p",
    [
        (np.ones(5, int), np.linspace(0.1, 0.9, 5)),  # one class
        (np.array([0, 1, 0, 1]), np.full(4, 0.3)),  # constant scores
    ],
)
def test_threshold_degenerate_is_half(y, p, no_warnings):
    assert choose_threshold(y, p) == 0.5
    assert choose_threshold(y, p, "youden") == 0.5


def test_threshold_rejects_unknown_criterion():
    with pytest.raises(ConfigError):
        choose_threshold(np.array([0, 1]), np.array([0.2, 0.8]), "acc")  # type: ignore[arg-type]


def test_binary_single_class_gives_none_without_warnings(no_warnings):
    m = binary_metrics(np.zeros(4, int), np.array([0.1, 0.2, 0.3, 0.9]))
    assert m["roc_auc"] is None and m["pr_auc"] is None and m["recall"] is None
    assert m["precision"] == 0.0  # one false positive: defined
    assert m["confusion_matrix"] == [[3, 1], [0, 0]]
    assert m["log_loss"] > 0 and json.dumps(m, allow_nan=False)


def test_binary_constant_predictions(no_warnings):
    m = binary_metrics(np.array([0, 1, 1, 0]), np.full(4, 0.2))
    assert m["precision"] is None  # nothing predicted positive
    assert m["recall"] == 0.0
    assert m["roc_auc"] == pytest.approx(0.5)


def test_binary_rejects_bad_inputs():
    with pytest.raises(DataError, match="no rows"):
        binary_metrics(np.array([], int), np.array([]))
    with pytest.raises(ValueError, match="0 and 1"):
        binary_metrics(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="rows"):
        binary_metrics(np.array([0, 1, 1]), np.array([0.1, 0.2]))


def test_multiclass_by_hand_and_against_sklearn():
    y = np.array([0, 1, 2, 2])
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    m = multiclass_metrics(y, proba, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    assert m["per_class"]["b"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["c"]["recall"] == pytest.approx(0.5)
    assert m["n"] == 4


def test_multiclass_absent_class_is_none(no_warnings):
    m = multiclass_metrics(np.array([0, 0, 1]), np.eye(3)[[0, 1, 1]], ["a", "b", "c"])
    assert m["per_class"]["c"]["precision"] is None
    assert m["confusion_matrix"][2] == [0, 0, 0]
    assert _plain(m)


def test_multiclass_rejects_mismatched_names():
    with pytest.raises(ValueError, match="proba"):
        multiclass_metrics(np.array([0, 1]), np.eye(3)[[0, 1]], ["a", "b"])
    with pytest.raises(ValueError, match="integers"):
        multiclass_metrics(np.array([0, 3]), np.eye(3)[[0, 1]], ["a", "b", "c"])


def test_regression_by_hand_and_against_sklearn():
    y = np.array([1.0, 2.0, 3.0])
    pred = np.array([1.0, 2.0, 5.0])
    m = regression_metrics(y, pred)
    assert m["mae"] == pytest.approx(2 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(4 / 3))
    assert m["r2"] == pytest.approx(skm.r2_score(y, pred))
    assert m["n"] == 3


def test_regression_constant_target_r2_none(no_warnings):
    assert regression_metrics([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])["r2"] is None
    assert regression_metrics([2.0], [1.0])["r2"] is None


def test_all_results_json_safe(noisy_binary):
    y, p = noisy_binary
    results = [
        binary_metrics(y, p),
        binary_metrics(np.ones(3, int), np.ones(3)),
        multiclass_metrics(np.array([0, 1, 1]), np.eye(2)[[0, 1, 0]], ["x", "y"]),
        regression_metrics(np.float32([1, 2]), np.float32([1, 2])),
    ]
    for m in results:
        assert _plain(m), m
        json.dumps(m, allow_nan=False)


def test_evaluate_predictions_dispatch():
    y = np.array([0, 1, 1])
    proba = np.eye(2)[[0, 1, 0]] * 0.9 + 0.05
    multi = evaluate_predictions("multiclass", y, proba)
    assert set(multi["per_class"]) >= {"0", "1"}
    assert evaluate_predictions("regression", [1.0, 2.0], [1.0, 2.0])["rmse"] == 0.0
    with pytest.raises(ConfigError, match="model.task"):
        evaluate_predictions("ranking", y, proba)


@pytest.mark.parametrize(
    "task, expected",
    [
        ("binary", ("roc_auc", True)),
        ("multiclass", ("macro_f1", True)),
        ("regression", ("rmse", False)),
    ],
)
def test_primary_metric_auto(task, expected):
    assert primary_metric(task) == expected


def test_primary_metric_named_and_unknown():
    assert primary_metric("binary", "log_loss") == ("log_loss", False)
    assert primary_metric("regression", "r2") == ("r2", True)
    with pytest.raises(ConfigError) as info:
        primary_metric("regression", "roc_auc")
    assert info.value.where == "evaluate.metric"
    assert "rmse" in str(info.value) and "mae" in str(info.value)
