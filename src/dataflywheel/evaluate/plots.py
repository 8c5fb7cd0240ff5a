"""Evaluation plots as PNG data URIs, for embedding in a self-contained HTML report.

Each function draws on a fresh :class:`matplotlib.figure.Figure` (never pyplot's global
figure list), renders it with the Agg canvas and returns ``data:image/png;base64,...``.
matplotlib and scikit-learn's display classes are imported inside the functions so importing
this module stays cheap.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
THRESHOLD_STYLE = {"color": "tab:red", "marker": "o", "markersize": 8, "linestyle": "none"}


@contextmanager
def _figure(ncols: int = 1, size: tuple[float, float] = (5.0, 4.0)) -> Iterator[tuple[Figure, Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins rather than a layout engine: constrained layout measured half the
    # report's render time, and these plots have short, predictable labels.
    fig = Figure(figsize=(size[0] * ncols, size[1]), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    fig.subplots_adjust(left=0.14 / ncols ** 0.5, right=0.97, bottom=0.13, top=0.9, wspace=0.3)
    try:
        yield fig, axes
    finally:
        fig.clear()


def _data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def learning_curves(history: Sequence[dict[str, Any]]) -> str | None:
    """Loss and val_loss per epoch, plus a second panel for any other ``val_*`` metric.

    Epochs come from each row's ``epoch`` key (else 1, 2, ...). Returns None when no row has
    a loss to draw.
    """
    rows = [r for r in history if isinstance(r, dict)]
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(rows)]
    numeric = {
        k
        for r in rows
        for k, v in r.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    losses = [k for k in ("loss", "train_loss", "val_loss") if k in numeric]
    extra = sorted(k for k in numeric if k.startswith("val_") and k != "val_loss")
    if not losses and not extra:
        return None

    def series(key: str) -> tuple[list[Any], list[float]]:
        pts = [(e, r[key]) for e, r in zip(epochs, rows, strict=True) if r.get(key) is not None]
        return [e for e, _ in pts], [float(v) for _, v in pts]

    panels = [(keys, label) for keys, label in ((losses, "loss"), (extra, "metric")) if keys]
    with _figure(len(panels), size=(5.0, 3.6)) as (fig, axes):
        for ax, (keys, ylabel) in zip(axes, panels, strict=True):
            for key in keys:
                ax.plot(*series(key), marker="." if len(rows) < 40 else None, label=key)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend()
        return _data_uri(fig)


def roc_curve(y_true: np.ndarray, p_pos: np.ndarray, threshold: float) -> str:
    """ROC curve with the chance line and the operating point at ``threshold`` marked."""
    from sklearn.metrics import RocCurveDisplay

    with _figure() as (fig, axes):
        ax = axes[0]
        RocCurveDisplay.from_predictions(y_true, p_pos, ax=ax, name="model", plot_chance_level=True)
        fpr, tpr = _operating_point(y_true, p_pos, threshold)
        ax.plot([fpr], [tpr], label=f"threshold {threshold:.3g}", **THRESHOLD_STYLE)
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
        return _data_uri(fig)


def pr_curve(y_true: np.ndarray, p_pos: np.ndarray, threshold: float) -> str:
    """Precision-recall curve with the positive rate and the point at ``threshold`` marked."""
    from sklearn.metrics import PrecisionRecallDisplay, precision_score, recall_score

    pred = (p_pos >= threshold).astype(int)
    with _figure() as (fig, axes):
        ax = axes[0]
        PrecisionRecallDisplay.from_predictions(
            y_true, p_pos, ax=ax, name="model", plot_chance_level=True
        )
        if pred.any():
            r = recall_score(y_true, pred, zero_division=0)
            p = precision_score(y_true, pred, zero_division=0)
            ax.plot([r], [p], label=f"threshold {threshold:.3g}", **THRESHOLD_STYLE)
        ax.legend(loc="lower left")
        ax.grid(alpha=0.3)
        return _data_uri(fig)


def _operating_point(
    y_true: np.ndarray, p_pos: np.ndarray, threshold: float
) -> tuple[float, float]:
    pred = p_pos >= threshold
    pos = y_true == 1
    return float(pred[~pos].mean()), float(pred[pos].mean())


def calibration(y_true: np.ndarray, p_pos: np.ndarray, threshold: float, n_bins: int = 10) -> str:
    """Reliability diagram (``sklearn.calibration.calibration_curve``) with the threshold line."""
    from sklearn.calibration import CalibrationDisplay

    with _figure() as (fig, axes):
        ax = axes[0]
        CalibrationDisplay.from_predictions(y_true, p_pos, n_bins=n_bins, ax=ax, name="model")
        ax.axvline(threshold, color="tab:red", linestyle=":", label=f"threshold {threshold:.3g}")
        ax.legend(loc="upper left")
        ax.grid(alpha=0.3)
        return _data_uri(fig)


def confusion_matrix(cm: Sequence[Sequence[int]], labels: Sequence[str]) -> str:
    """Confusion matrix counts, rows = true class, columns = predicted class."""
    from sklearn.metrics import ConfusionMatrixDisplay

    k = len(labels)
    side = min(4.0 + 0.35 * max(0, k - 4), 10.0)
    with _figure(size=(side + 0.6, side)) as (fig, axes):
        disp = ConfusionMatrixDisplay(np.asarray(cm), display_labels=list(labels))
        disp.plot(
            ax=axes[0], cmap="Blues", colorbar=False, values_format="d", text_kw={"fontsize": 12}
        )
        if k > 4:
            axes[0].tick_params(axis="x", labelrotation=45)
        return _data_uri(fig)


def regression_plots(y_true: np.ndarray, y_pred: np.ndarray) -> str:
    """Predicted vs actual (with the identity line) beside residuals vs predicted."""
    from sklearn.metrics import PredictionErrorDisplay

    with _figure(2) as (fig, axes):
        for ax, kind in zip(axes, ("actual_vs_predicted", "residual_vs_predicted"), strict=True):
            PredictionErrorDisplay.from_predictions(
                y_true,
                y_pred,
                kind=kind,
                ax=ax,
                subsample=2000,
                random_state=0,
                scatter_kwargs={"alpha": 0.5, "s": 12},
            )
            ax.grid(alpha=0.3)
        axes[0].set_title("predicted vs actual")
        axes[1].set_title("residuals")
        return _data_uri(fig)
