"""Turn a model's logits into predictions: the task's output activation on the model's logits.

Every model is called the same way, ``model(batch)`` with a :data:`~dataflywheel.features.batch.Batch`
of the names it declares it reads (:func:`~dataflywheel.features.batch.model_reads`); token rows
are padded per batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from dataflywheel.features.batch import collate, dtype_for, model_reads, n_rows, ragged_lengths, sources, to_tensors

if TYPE_CHECKING:
    from dataflywheel.features.batch import Batch, Inputs, PadIds

TEXT_BATCH = 64
"""Texts per forward pass at prediction time (attention memory grows with batch x length^2)."""
TABULAR_BATCH = 8192


def as_batch(model: nn.Module, inputs: Inputs, *, pad_id: PadIds = 0,
             placement: tuple[torch.dtype, torch.device] | None = None) -> Batch:
    """All rows of ``inputs`` as one batch of the names ``model`` reads, as tensors of their
    registered kinds on the model's device (floats in its dtype, ragged rows padded).
    ``placement``: the model's ``(dtype, device)`` when the caller knows it (saves a walk over
    its parameters per call)."""
    dtype, device = placement if placement is not None else dtype_for(model)
    return collate(to_tensors(inputs, sources(model_reads(model)), dtype=dtype, device=device), None,
                   pad_id=pad_id, device=device)


def predict_logits(model: nn.Module, inputs: Inputs, *, pad_id: PadIds = 0, batch_size: int | None = None,
                   ) -> torch.Tensor:
    """Logits ``(N, n_outputs)`` in eval mode and without autograd; the model's mode is restored.

    ``inputs`` holds N encoded rows by batch name (NumPy arrays, tensors, ragged token rows);
    only the names the model reads are used. With ragged rows, they are batched in length order
    (each batch padded to its longest, ``pad_id``) and the logits returned in input order."""
    dtype, device = dtype_for(model)
    tensors = to_tensors(inputs, sources(model_reads(model)), dtype=dtype, device=device)
    n = n_rows(tensors)
    lengths = ragged_lengths(tensors)
    order = None if lengths is None else torch.from_numpy(np.argsort(lengths, kind="stable"))  # (N,) shortest first
    batches: list[torch.Tensor | slice]
    if order is None:
        size = batch_size or TABULAR_BATCH
        batches = [slice(i, i + size) for i in range(0, n, size)]
    else:
        batches = list(torch.split(order, batch_size or TEXT_BATCH))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = [model(collate(tensors, idx, pad_id=pad_id, device=device)) for idx in batches]
    finally:
        model.train(was_training)
    if not parts:
        return torch.empty((0, 1))
    logits = torch.cat(parts)
    if order is not None:
        logits = logits[torch.argsort(order)]  # the batches are ``order`` cut in pieces
    return logits


def logits_to_output(logits: torch.Tensor, task: str) -> np.ndarray:
    """The task's output activation (:meth:`~dataflywheel.tasks.Task.activate`): binary ``(N,)``
    probability of class 1; multiclass ``(N, k)`` softmax; regression ``(N,)``.

    Computed in NumPy (SciPy's ``expit``/``softmax``): a torch op here may open torch's thread
    pool, which right after an onnxruntime run waits for a core its workers still hold (about
    5 ms for a (16, 5) softmax on 2 cores, measured, against 0.07 ms)."""
    from dataflywheel.tasks import get_task

    return get_task(task).activate(logits.detach().cpu().float().numpy())


def predict_proba(model: nn.Module, inputs: Inputs, task: str, *, pad_id: PadIds = 0) -> np.ndarray:
    """Predictions as NumPy (see :func:`logits_to_output` for the shapes)."""
    return logits_to_output(predict_logits(model, inputs, pad_id=pad_id), task)
