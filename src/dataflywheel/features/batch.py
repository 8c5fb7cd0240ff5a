"""The batch contract: what the feature encoders produce and the models read, keyed by name.

A :data:`Batch` is a dict of tensors for one forward pass, ``{name: (B, ...) tensor}``. Each
name is a registered :class:`InputKey` saying its dtype and which of its axes vary between
batches, so that the training loop, prediction, ONNX export and explanations can treat every
input alike:

========================  ========  =================================================
name                      dtype     shape
========================  ========  =================================================
``numeric``               float     (B, n_numeric): numbers, binaries, one-hot, dates
``categorical``           long      (B, n_categorical): category indices
``tokens``                long      (B, T): token ids, padded to the batch's longest
``attention_mask``        bool      (B, T): True on real tokens
``labels``                long      (B, T): a completion's token ids, -100 elsewhere
========================  ========  =================================================

Each encoder declares the names it produces (``Encoder.produces``), so the preprocessor knows
its outputs (``Preprocessor.produces_``); each model declares the names it reads (its
``inputs`` attribute, :func:`model_reads`). Host-side, encoded rows are :data:`Inputs`: NumPy
arrays or torch tensors with N rows, and :class:`~dataflywheel.features.ragged.Ragged` token
rows, which :func:`collate` pads into ``tokens`` plus its mask per mini-batch. A new kind of
input (``pixels`` for images) is one :func:`register_input` call, an encoder that produces it
and a model that reads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from dataflywheel.errors import ModelError
from dataflywheel.features.batch_names import (
    ATTENTION_MASK,
    CATEGORICAL,
    LABEL_PAD,
    LABELS,
    NUMERIC,
    TABULAR,
    TEXT,
    TOKENS,
    InputKey,
    check_reads,
    input_key,
    register_input,
    sources,
    text_names,
)
from dataflywheel.features.ragged import Ragged

Batch = dict[str, torch.Tensor]
"""One forward pass's inputs: registered name -> (B, ...) tensor."""
Inputs = Mapping[str, "torch.Tensor | np.ndarray | Ragged"]
"""N encoded rows by name: dense arrays or tensors, and ragged token rows (padded by :func:`collate`)."""

__all__ = ["ATTENTION_MASK", "CATEGORICAL", "LABELS", "LABEL_PAD", "NUMERIC", "TABULAR", "TEXT", "TOKENS", "Batch",
           "InputKey", "Inputs", "PadIds", "check_reads", "collate", "dtype_for", "input_key", "model_reads", "n_rows",
           "ragged_lengths", "register_input", "sources", "text_names", "to_tensors"]

def model_reads(model: nn.Module) -> tuple[str, ...]:
    """The batch names ``model`` reads: its ``inputs`` attribute (every registered model, and
    every wrapper around one, declares it)."""
    names = getattr(model, "inputs", None)
    if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names):
        raise ModelError(f"a {type(model).__name__} does not declare the batch names it reads",
                         fix="give the module an `inputs` tuple, e.g. ('numeric', 'categorical')")
    return names


def n_rows(inputs: Inputs) -> int:
    """The rows of host-side inputs (0 for none); a :class:`ModelError` when they disagree."""
    counts = {name: len(v) if isinstance(v, Ragged) else int(v.shape[0]) for name, v in inputs.items()}
    if len(set(counts.values())) > 1:
        raise ModelError(f"inputs differ in rows: {counts}")
    return next(iter(counts.values()), 0)


def dtype_for(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """The float dtype and the device of ``model``'s first parameter (default dtype, CPU without)."""
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.get_default_dtype()
    return dtype, param.device if param is not None else torch.device("cpu")


def to_tensors(inputs: Inputs, names: Sequence[str], *, dtype: torch.dtype, device: torch.device,
               ) -> dict[str, torch.Tensor | Ragged]:
    """The entries ``names`` of host-side inputs as tensors of their registered kind on
    ``device`` (floats in ``dtype``); ragged entries stay ragged."""
    out: dict[str, torch.Tensor | Ragged] = {}
    for name in names:
        if name not in inputs:
            check_reads([name], inputs.keys())
        value = inputs[name]
        if isinstance(value, Ragged):
            out[name] = value
            continue
        kind = input_key(name).kind
        target = dtype if kind == "float" else torch.long if kind == "long" else torch.bool
        tensor = torch.as_tensor(value, dtype=target, device=device)
        if tensor.ndim == 1 and tensor.numel() == 0:  # an empty block of a batch with no rows
            tensor = tensor.reshape(0, 0)
        out[name] = tensor
    return out


PadIds = int | Mapping[str, int]
"""The padding id of every ragged input, or per ragged input's name (missing names pad with 0)."""


def collate(inputs: Mapping[str, torch.Tensor | Ragged], idx: torch.Tensor | slice | None, *, pad_id: PadIds = 0,
            device: torch.device | None = None) -> Batch:
    """The :data:`Batch` of rows ``idx`` (indices, a slice, or all rows when None): dense
    entries indexed, ragged ones padded to the longest selected row with their ``pad_id`` and
    their mask added."""
    batch: Batch = {}
    for name, value in inputs.items():
        if isinstance(value, Ragged):
            if idx is None:
                rows = None
            elif isinstance(idx, slice):
                rows = np.arange(len(value))[idx]
            else:
                rows = idx.cpu().numpy()
            ids, mask = value.pad(rows, pad_id.get(name, 0) if isinstance(pad_id, Mapping) else pad_id)
            batch[name] = torch.from_numpy(ids).to(device or "cpu", non_blocking=True)
            mask_name = input_key(name).mask
            if mask_name is not None:
                batch[mask_name] = torch.from_numpy(mask).to(device or "cpu", non_blocking=True)
        else:
            batch[name] = value if idx is None else value[idx]
    return batch


def ragged_lengths(inputs: Mapping[str, object]) -> np.ndarray | None:
    """The row lengths of the (first) ragged input, for length-ordered batching; None without."""
    for value in inputs.values():
        if isinstance(value, Ragged):
            return value.lengths
    return None
