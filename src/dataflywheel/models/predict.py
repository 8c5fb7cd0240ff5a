"""Turn a model's logits into predictions: probabilities for classifiers, values for regression."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

ArrayLike = torch.Tensor | np.ndarray | Any


def as_inputs(
    model: nn.Module, numeric: ArrayLike, categorical: ArrayLike
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensors on the model's device: numeric in its float dtype, categorical as long."""
    param = next(model.parameters(), None)
    dtype = (
        param.dtype
        if param is not None and param.is_floating_point()
        else torch.get_default_dtype()
    )
    device = param.device if param is not None else torch.device("cpu")
    num = torch.as_tensor(numeric, dtype=dtype, device=device)
    cat = torch.as_tensor(categorical, dtype=torch.long, device=device)
    if cat.ndim == 1 and cat.numel() == 0:
        cat = cat.reshape(num.shape[0], 0)
    return num, cat


def predict_logits(
    model: nn.Module, numeric: ArrayLike, categorical: ArrayLike, *, batch_size: int = 8192
) -> torch.Tensor:
    """Logits ``(N, n_outputs)`` in eval mode and without autograd; the model's mode is restored.
    Inputs may be tensors or NumPy arrays."""
    numeric, categorical = as_inputs(model, numeric, categorical)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = [
                model(numeric[i : i + batch_size], categorical[i : i + batch_size])
                for i in range(0, numeric.shape[0], batch_size)
            ]
    finally:
        model.train(was_training)
    if not parts:
        return torch.empty((0, 1))
    return torch.cat(parts)


def logits_to_output(logits: torch.Tensor, task: str) -> np.ndarray:
    """binary: ``(N,)`` probability of class 1; multiclass: ``(N, k)`` softmax; regression: ``(N,)``."""
    if task == "binary":
        out = torch.sigmoid(logits.squeeze(-1))
    elif task == "multiclass":
        out = torch.softmax(logits, dim=-1)
    else:
        out = logits.squeeze(-1)
    return out.detach().cpu().numpy()


def predict_proba(
    model: nn.Module, numeric: ArrayLike, categorical: ArrayLike, task: str
) -> np.ndarray:
    """Predictions as NumPy (see :func:`logits_to_output` for the shapes)."""
    return logits_to_output(predict_logits(model, numeric, categorical), task)
