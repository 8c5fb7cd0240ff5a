"""Turn a model's logits into predictions: the task's output activation on the model's logits.

Every model is called the same way: ``model(numeric, categorical)``, and for a text model also
``tokens=`` (B, T) long and ``attention_mask=`` (B, T) bool, padded per batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from dataflywheel.features.ragged import Ragged

ArrayLike = torch.Tensor | np.ndarray | Any
TEXT_BATCH = 64
"""Texts per forward pass at prediction time (attention memory grows with batch x length^2)."""


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
    model: nn.Module,
    numeric: ArrayLike,
    categorical: ArrayLike,
    *,
    tokens: Ragged | None = None,
    pad_id: int = 0,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Logits ``(N, n_outputs)`` in eval mode and without autograd; the model's mode is restored.
    Inputs may be tensors or NumPy arrays. With ``tokens`` (N ragged rows), texts are batched
    in length order (each batch padded to its longest) and the logits returned in input order."""
    numeric, categorical = as_inputs(model, numeric, categorical)
    batches: list[torch.Tensor] = []
    if tokens is not None:
        by_length = torch.from_numpy(np.argsort(tokens.lengths, kind="stable"))  # (N,)
        batches = list(by_length.split(batch_size or TEXT_BATCH))
    size = batch_size or 8192
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if tokens is None:
                parts = [
                    model(numeric[i : i + size], categorical[i : i + size])
                    for i in range(0, numeric.shape[0], size)
                ]
            else:
                parts = [_text_forward(model, numeric, categorical, tokens, pad_id, idx) for idx in batches]
    finally:
        model.train(was_training)
    if not parts:
        return torch.empty((0, 1))
    logits = torch.cat(parts)
    if tokens is not None:
        logits = logits[torch.argsort(torch.cat(batches))]
    return logits


def _text_forward(model: nn.Module, numeric: torch.Tensor, categorical: torch.Tensor, tokens: Ragged,
                  pad_id: int, idx: torch.Tensor) -> torch.Tensor:
    ids, mask = tokens.pad(idx.numpy(), pad_id)
    device = numeric.device
    return model(numeric[idx], categorical[idx], tokens=torch.from_numpy(ids).to(device),
                 attention_mask=torch.from_numpy(mask).to(device))


def logits_to_output(logits: torch.Tensor, task: str) -> np.ndarray:
    """The task's output activation (:meth:`~dataflywheel.tasks.Task.activate`): binary ``(N,)``
    probability of class 1; multiclass ``(N, k)`` softmax; regression ``(N,)``.

    Computed in NumPy (SciPy's ``expit``/``softmax``): a torch op here may open torch's thread
    pool, which right after an onnxruntime run waits for a core its workers still hold (about
    5 ms for a (16, 5) softmax on 2 cores, measured, against 0.07 ms)."""
    from dataflywheel.tasks import get_task

    return get_task(task).activate(logits.detach().cpu().float().numpy())


def predict_proba(
    model: nn.Module,
    numeric: ArrayLike,
    categorical: ArrayLike,
    task: str,
    *,
    tokens: Ragged | None = None,
    pad_id: int = 0,
) -> np.ndarray:
    """Predictions as NumPy (see :func:`logits_to_output` for the shapes)."""
    return logits_to_output(predict_logits(model, numeric, categorical, tokens=tokens, pad_id=pad_id), task)
