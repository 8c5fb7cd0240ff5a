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
from dataflywheel.features.batch import Batch, PadIds, check_reads, collate, ragged_lengths, sources, to_tensors
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
        return list(torch.split(perm, batch_size))
    batches: list[torch.Tensor] = []
    for chunk in torch.split(perm, batch_size * bucket_batches):
        by_length = torch.argsort(lengths[chunk], stable=True)
        batches += list(torch.split(chunk[by_length], batch_size))
    order = torch.randperm(len(batches), generator=generator)
    return [batches[int(i)] for i in order]


@dataclass
class Batchable:
    """A split's model inputs and target: ``inputs`` by batch name (:mod:`~dataflywheel.features.batch`),
    dense tensors of N rows (``numeric`` (N, n_numeric) float, ``categorical`` (N, n_cat) long,
    ...) and ragged token rows padded with ``pad_id`` per mini-batch; ``y`` (N,) float for
    bce/mse or long for cross-entropy."""

    inputs: dict[str, torch.Tensor | Ragged]
    y: torch.Tensor
    pad_id: PadIds = 0

    @classmethod
    def of(cls, numeric: torch.Tensor, categorical: torch.Tensor, y: torch.Tensor, tokens: Ragged | None = None,
           pad_id: int = 0) -> Batchable:
        """The inputs of a table (and a text column): ``numeric``, ``categorical``, ``tokens``."""
        inputs: dict[str, torch.Tensor | Ragged] = {"numeric": numeric, "categorical": categorical}
        if tokens is not None:
            inputs["tokens"] = tokens
        return cls(inputs, y, pad_id)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def lengths(self) -> torch.Tensor | None:
        """Token counts per row (N,) of the ragged input, for length-bucketed batches; None without."""
        lengths = ragged_lengths(self.inputs)
        return None if lengths is None else torch.from_numpy(lengths)

    @property
    def dense(self) -> bool:
        """Whether every input is a dense tensor (a mini-batch is a row selection, no padding)."""
        return not any(isinstance(v, Ragged) for v in self.inputs.values())

    def batch(self, idx: torch.Tensor) -> Batch:
        """The :data:`~dataflywheel.features.batch.Batch` of rows ``idx``."""
        device = next((v.device for v in self.inputs.values() if isinstance(v, torch.Tensor)), None)
        return collate(self.inputs, idx, pad_id=self.pad_id, device=device)

    def forward(self, model: Callable[[Batch], torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        """Logits of rows ``idx``: ``model(batch)``."""
        return model(self.batch(idx))

    def prepared(self, task: str, dtype: torch.dtype, name: str, device: torch.device,
                 reads: tuple[str, ...] | None = None) -> Batchable:
        """Checked (rows agree, not empty, every name in ``reads`` present), narrowed to ``reads``
        (all inputs when None), the target prepared for the task, moved to ``device``."""
        n = len(self)
        if n == 0:
            raise DataError(f"the {name} split is empty", where=name, fix="add rows or change data.split")
        names = list(self.inputs) if reads is None else sources(reads)
        check_reads(names, self.inputs.keys())
        rows = {k: len(v) if isinstance(v, Ragged) else int(v.shape[0]) for k, v in self.inputs.items()}
        if any(r != n for r in rows.values()):
            shapes = ", ".join(f"{k} ({r} rows)" for k, r in rows.items())
            raise DataError(f"{shapes} and y {tuple(self.y.shape)} differ in rows", where=name)
        y = get_task(task).prepare_y(self.y, dtype)
        inputs = to_tensors(self.inputs, names, dtype=dtype, device=device)
        return Batchable(inputs, y.to(device), self.pad_id)


def prepare_batchable(data: Batchable, task: str, dtype: torch.dtype, name: str, device: torch.device,
                      reads: tuple[str, ...] | None = None) -> Batchable:
    """``data`` checked and ready for the loop (:meth:`Batchable.prepared`)."""
    return data.prepared(task, dtype, name, device, reads)
