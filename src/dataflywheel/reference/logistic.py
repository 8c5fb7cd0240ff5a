"""The single-neuron logistic model in NumPy: the maths our torch code must reproduce.

For a batch ``X`` (B, d), targets ``y`` (B,) in {0, 1}, weights ``w`` (d,) and bias ``b``:

    z      = sigmoid(X @ w + b)                        (B,)
    J      = -mean(y log z + (1 - y) log(1 - z))       scalar
    dJ/dw  = X.T @ (z - y) / B                         (d,)
    dJ/db  = mean(z - y)                               scalar
    w, b  <- w - lr dJ/dw,  b - lr dJ/db
"""

from __future__ import annotations

import numpy as np


def sigmoid(a: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-a), computed without overflow for large |a|."""
    a = np.asarray(a, dtype=np.float64)
    e = np.exp(-np.abs(a))
    z: np.ndarray = np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return z


def forward(X: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    """z = sigmoid(X @ w + b): (B, d), (d,), scalar -> (B,)."""
    return sigmoid(np.asarray(X, dtype=np.float64) @ np.asarray(w, dtype=np.float64) + b)


def bce(z: np.ndarray, y: np.ndarray) -> float:
    """Binary cross-entropy, mean over the batch."""
    z, y = np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(z) + (1.0 - y) * np.log(1.0 - z)))


def gradients(X: np.ndarray, y: np.ndarray, w: np.ndarray, b: float) -> tuple[np.ndarray, float]:
    """(dJ/dw (d,), dJ/db): the error ``z - y`` times the input, averaged over the batch."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    err = forward(X, w, b) - y  # (B,)
    return X.T @ err / len(y), float(np.mean(err))


def sgd_step(
    X: np.ndarray, y: np.ndarray, w: np.ndarray, b: float, lr: float
) -> tuple[np.ndarray, float]:
    """One gradient-descent update: (w - lr dJ/dw, b - lr dJ/db)."""
    dw, db = gradients(X, y, w, b)
    return np.asarray(w, dtype=np.float64) - lr * dw, float(b - lr * db)
