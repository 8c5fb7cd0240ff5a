"""Mini-batch order and collation for the training loop.

Tabular batches are rows of in-memory tensors. Text batches carry ragged token ids that are
padded per mini-batch to its own longest text (dynamic padding); with length bucketing the
shuffled rows are cut into chunks, each chunk sorted by length and split into batches, and
the batches shuffled, so a batch holds texts of similar length and pads little. Every
random choice comes from the loop's seeded generator, so the order is reproducible.
"""

from __future__ import annotations

import torch

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
