"""Ragged token ids: variable-length rows in one flat array, padded per mini-batch.

Apart from :mod:`dataflywheel.features.text` so that the training loop and prediction need
NumPy alone, not the tokenizer or polars.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ragged:
    """Variable-length int64 sequences: row ``i`` is ``ids[offsets[i]:offsets[i + 1]]``."""

    ids: np.ndarray
    """int64 (total,)"""
    offsets: np.ndarray
    """int64 (n + 1,), starting at 0"""

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)  # (n,)

    def row(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    @classmethod
    def from_lists(cls, seqs: Sequence[Sequence[int] | np.ndarray]) -> Ragged:
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum([len(s) for s in seqs], out=offsets[1:])
        flat = [t for s in seqs for t in s]
        return cls(np.asarray(flat, dtype=np.int64).reshape(-1), offsets)

    def take(self, idx: np.ndarray) -> Ragged:
        """The rows ``idx``, in that order."""
        return Ragged.from_lists([self.row(int(i)) for i in idx])

    def pad(self, idx: np.ndarray | None = None, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``idx`` (all when None) padded to the longest of them: ``(ids (B, T) int64,
        mask (B, T) bool)`` with ``mask`` True on real tokens."""
        idx = np.arange(len(self)) if idx is None else np.asarray(idx, dtype=np.int64)
        starts = self.offsets[idx]  # (B,)
        lengths = self.offsets[idx + 1] - starts  # (B,)
        width = int(lengths.max()) if len(idx) else 0
        pos = np.arange(width, dtype=np.int64)  # (T,)
        mask = pos[None, :] < lengths[:, None]  # (B, T)
        gather = np.where(mask, starts[:, None] + pos[None, :], 0)  # (B, T)
        ids = self.ids[gather] if self.ids.size else np.zeros(gather.shape, dtype=np.int64)
        return np.where(mask, ids, pad_id), mask
