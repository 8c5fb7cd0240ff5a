"""Mini-batch order and collation for the training loop.

Tabular batches are rows of in-memory tensors. Text batches carry ragged token ids that are
padded per mini-batch to its own longest text (dynamic padding); with length bucketing the
shuffled rows are cut into chunks, each chunk sorted by length and split into batches, and
the batches shuffled, so a batch holds texts of similar length and pads little. Every
random choice comes from the loop's seeded generator, so the order is reproducible.
:class:`Batchable` holds a split's tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dataflywheel.errors import DataError
from dataflywheel.features.ragged import Ragged
from dataflywheel.tasks import get_task

BUCKET_BATCHES = 50
"""Batches per length-sorted chunk: larger pads less, smaller keeps batches more random."""


def batch_order(
    n: int,
    batch_size: int,
    generator: torch.Generator,
    lengths: torch.Tensor | None = None,
    *,
    bucket_batches: int = BUCKET_BATCHES,
) -> list[torch.Tensor]:
    """Row indices of each mini-batch of one epoch, covering ``range(n)`` once.

    Without ``lengths``: consecutive slices of one random permutation. With ``lengths`` (N,):
    length-bucketed as the module docstring describes.
    """
    perm = torch.randperm(n, generator=generator)  # (N,)
    if lengths is None:
        return list(perm.split(batch_size))
    batches: list[torch.Tensor] = []
    for chunk in perm.split(batch_size * bucket_batches):
        by_length = torch.argsort(lengths[chunk], stable=True)
        batches += list(chunk[by_length].split(batch_size))
    order = torch.randperm(len(batches), generator=generator)
    return [batches[int(i)] for i in order]


@dataclass
class Batchable:
    """Model inputs and target: ``numeric`` (N, n_numeric) float, ``categorical`` (N, n_cat)
    long, ``y`` (N,) float for bce/mse or long for cross-entropy, and for text models
    ``tokens``: N ragged token-id rows, padded with ``pad_id`` per mini-batch."""

    numeric: torch.Tensor
    categorical: torch.Tensor
    y: torch.Tensor
    tokens: Ragged | None = None
    pad_id: int = 0

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def forward(self, model: Callable[..., torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        """Logits of rows ``idx``: ``model(numeric, categorical)``, plus for text
        ``tokens`` (B, T) long and ``attention_mask`` (B, T) bool padded to the batch's longest."""
        if self.tokens is None:
            return model(self.numeric[idx], self.categorical[idx])
        ids, mask = self.tokens.pad(idx.numpy(), self.pad_id)
        device = self.numeric.device
        return model(
            self.numeric[idx],
            self.categorical[idx],
            tokens=torch.from_numpy(ids).to(device, non_blocking=True),
            attention_mask=torch.from_numpy(mask).to(device, non_blocking=True),
        )


def prepare_batchable(data: Batchable, task: str, dtype: torch.dtype, name: str, device: torch.device) -> Batchable:
    """``data`` checked (rows agree, not empty), its target prepared for the task, moved to ``device``."""
    n = len(data)
    if n == 0:
        raise DataError(
            f"the {name} split is empty", where=name, fix="add rows or change data.split"
        )
    n_tokens = n if data.tokens is None else len(data.tokens)
    if data.numeric.shape[0] != n or data.categorical.shape[0] != n or n_tokens != n:
        raise DataError(
            f"numeric {tuple(data.numeric.shape)}, categorical {tuple(data.categorical.shape)}, "
            f"tokens ({n_tokens} rows) and y {tuple(data.y.shape)} differ in rows",
            where=name,
        )
    y = get_task(task).prepare_y(data.y, dtype)
    return Batchable(data.numeric.to(device, dtype), data.categorical.to(device, torch.long), y.to(device),
                     data.tokens, data.pad_id)
