from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dataflywheel.evaluate.metrics import (
    binary_metrics,
    choose_threshold,
    multiclass_metrics,
    regression_metrics,
)
from dataflywheel.evaluate.report import render_report

IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"')
HISTORY = [
    {"epoch": i + 1, "loss": 1 / (i + 1), "val_loss": 1.1 / (i + 1), "val_roc_auc": 0.8 + 0.01 * i}
    for i in range(8)
]


def _images(html: str) -> dict[str, bytes]:
    return {alt: base64.b64decode(data) for data, alt in IMG.findall(html)}


def _assert_self_contained(html: str) -> None:
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', html, re.I)
    assert "<script" not in html.lower() and "<link" not in html.lower()


@pytest.fixture(scope="module")
def breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05)).fit(x_tr, y_tr)
    return y_te, model.predict_proba(x_te)[:, 1]


def test_binary_report(tmp_path: Path, breast_cancer):
    import matplotlib.pyplot as plt

    y, p = breast_cancer
    threshold = choose_threshold(y, p)
    metrics = {"valid": binary_metrics(y, p, 0.5), "test": binary_metrics(y, p, threshold)}
    out = render_report(
        tmp_path / "reports" / "model.html",
        title="breast <cancer> v1",
        task="binary",
        metrics=metrics,
        history=HISTORY,
        y_true=y,
        scores=p,
        class_names=["malignant", "benign"],
        lineage={"dataset": {"version": "ds-7", "hash": "3f2a"}, "config_hash": "c0ffee"},
        sections=[("Drift", "<p id='drift'>no drift</p>")],
    )
    html = out.read_text(encoding="utf-8")
    assert out == tmp_path / "reports" / "model.html"
    assert out.stat().st_size < 1_000_000
    _assert_self_contained(html)
    images = _images(html)
    assert {"Per epoch", "ROC curve", "Precision-recall curve", "Calibration"} <= set(images)
    assert any(alt.startswith("Confusion matrix") for alt in images)
    assert all(png.startswith(b"\x89PNG") for png in images.values())
    for key in ("roc_auc", "f1", "brier"):
        assert f"{metrics['test'][key]:.4g}" in html
    assert f"{threshold:.4g}" in html
    assert "ds-7" in html and "c0ffee" in html and "dataset.version" in html
    assert "<p id='drift'>no drift</p>" in html  # trusted section is not escaped
    assert "breast &lt;cancer&gt; v1" in html  # everything else is
    assert plt.get_fignums() == []
    assert [f.name for f in out.parent.iterdir()] == ["model.html"]  # no temp file left


def test_multiclass_report(tmp_path: Path):
    y = np.array([0, 1, 2, 2, 1, 0])
    proba = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.1, 0.8, 0.1],
            [0.2, 0.5, 0.3],
            [0.1, 0.1, 0.8],
            [0.3, 0.6, 0.1],
            [0.5, 0.3, 0.2],
        ]
    )
    names = ["setosa", "versicolor", "virginica"]
    metrics = multiclass_metrics(y, proba, names)
    html = render_report(
        tmp_path / "r.html",
        title="iris",
        task="multiclass",
        metrics=metrics,
        history=None,
        y_true=y,
        scores=proba,
        class_names=names,
    ).read_text()
    _assert_self_contained(html)
    images = _images(html)
    assert len(images) == 1 and next(iter(images)).startswith("Confusion matrix")
    assert "Per class" in html and "virginica" in html
    assert f"{metrics['macro_f1']:.4g}" in html


def test_regression_report(tmp_path: Path):
    rng = np.random.default_rng(1)
    y = rng.normal(size=200)
    pred = y + rng.normal(scale=0.3, size=200)
    metrics = regression_metrics(y, pred)
    html = render_report(
        tmp_path / "r.html",
        title="reg",
        task="regression",
        metrics=metrics,
        history=[{"loss": 2.0, "val_loss": 2.5}, {"loss": 1.0, "val_loss": 1.4}],
        y_true=y,
        scores=pred,
    ).read_text()
    _assert_self_contained(html)
    assert set(_images(html)) == {"Per epoch", "Predicted vs actual, and residuals"}
    assert f"{metrics['rmse']:.4g}" in html and f"{metrics['r2']:.4g}" in html


def test_single_class_binary_report_skips_curves(tmp_path: Path):
    y = np.ones(10, int)
    p = np.linspace(0.3, 0.9, 10)
    html = render_report(
        tmp_path / "r.html",
        title="t",
        task="binary",
        metrics=binary_metrics(y, p),
        history=[],
        y_true=y,
        scores=p,
    ).read_text()
    images = _images(html)
    assert "ROC curve" not in images and "Calibration" in images
    assert "need both classes" in html
    assert "—" in html  # roc_auc is undefined


def test_report_without_predictions_uses_metric_confusion_matrix(tmp_path: Path):
    metrics = {"accuracy": 0.5, "confusion_matrix": [[1, 1], [1, 1]], "threshold": 0.3, "n": 4}
    path = tmp_path / "r.html"
    path.write_text("old")
    html = render_report(path, title="t", task="binary", metrics=metrics, history=None).read_text()
    assert html != "old"
    assert [alt for alt in _images(html)] == [
        "Confusion matrix (rows: true, columns: predicted) at threshold 0.3"
    ]


def test_import_is_cheap():
    code = (
        "import sys, dataflywheel.evaluate.report;"
        "print(sorted(m for m in ('matplotlib', 'sklearn', 'jinja2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
