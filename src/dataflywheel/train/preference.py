"""Preference tuning (DPO) through the one training loop.

Direct Preference Optimization (Rafailov et al., 2023) learns from pairs (prompt, chosen,
rejected) without a reward model: with ``pi`` the policy's and ``ref`` the reference model's
log-probability of a whole completion given its prompt,

    loss = -log sigmoid(beta * ((pi(chosen) - ref(chosen)) - (pi(rejected) - ref(rejected))))

averaged over the pairs. ``beta`` (``train.dpo.beta``) sets how far the policy may move from the
reference. The implicit rewards ``beta * (pi - ref)`` of the chosen and rejected answers give
the validation's ``val_reward_accuracy`` (the share of pairs whose chosen answer earns more) and
``val_reward_margin``.

The reference is the model the DPO phase starts from (the champion for ``train.method: dpo``,
the SFT phase's model for ``sft+dpo``), so its log-probabilities are the policy's before the
first step: they are computed once, in eval mode without autograd, before training starts
(:func:`sequence_logps`), and kept in the artifact store per (dataset version, reference model)
(:class:`ReferenceCache`), so no second copy of the model is ever held and a rerun or a resume
reads them back.

A pair is encoded by the same chat encoder as an SFT row, chosen and rejected each with the
prompt (:func:`encode_pairs`); :class:`PairBatchable` holds both sides and the reference
log-probabilities as its target, and a mini-batch runs both sides through the model in one
forward (the rejected rows after the chosen ones, padded to one width). A pair whose chosen or
rejected side keeps no labelled token (``truncate: reject`` on a prompt too long) is left out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dataflywheel.features.batch import (
    ATTENTION_MASK,
    LABEL_PAD,
    LABELS,
    TOKENS,
    Batch,
    PadIds,
    collate,
    ragged_lengths,
)
from dataflywheel.features.ragged import Ragged
from dataflywheel.train.batching import Batchable
from dataflywheel.train.objective import Objective

if TYPE_CHECKING:
    import polars as pl

    from dataflywheel.features.preprocessor import Preprocessor


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pair (each argument (B,), summed log-probabilities): the DPO loss (B,) and the implicit
    rewards of the chosen and rejected answers (B,) each (detached)."""
    chosen = policy_chosen - ref_chosen
    rejected = policy_rejected - ref_rejected
    loss = -F.logsigmoid(beta * (chosen - rejected))
    return loss, (beta * chosen).detach(), (beta * rejected).detach()


@dataclass
class PairBatchable(Batchable):
    """Preference pairs: ``inputs`` the chosen sides (tokens and labels of prompt + chosen answer),
    ``rejected`` the rejected sides, ``y`` (N, 2) the reference log-probabilities of each side
    (zeros until :func:`sequence_logps` fills them)."""

    rejected: dict[str, torch.Tensor | Ragged] | None = None

    @property
    def lengths(self) -> torch.Tensor | None:
        """Tokens per pair, both sides (for length-bucketed batches and the tokens/s figure)."""
        chosen, rejected = (ragged_lengths(side) for side in self.sides())
        return None if chosen is None or rejected is None else torch.from_numpy(chosen + rejected)

    def sides(self) -> tuple[dict[str, torch.Tensor | Ragged], dict[str, torch.Tensor | Ragged]]:
        if self.rejected is None:
            raise ValueError("a PairBatchable needs its rejected sides")
        return self.inputs, self.rejected

    def prepared(self, task: str, dtype: torch.dtype, name: str, device: torch.device,
                 reads: tuple[str, ...] | None = None) -> PairBatchable:
        chosen, rejected = self.sides()
        placeholder = torch.zeros(len(self))
        a = Batchable(chosen, placeholder, self.pad_id).prepared(task, dtype, name, device, reads)
        b = Batchable(rejected, placeholder, self.pad_id).prepared(task, dtype, f"{name} (rejected)", device, reads)
        return PairBatchable(a.inputs, self.y.to(device=device, dtype=torch.float32), self.pad_id, b.inputs)

    def labelled_tokens(self) -> torch.Tensor:
        """Labelled tokens of each pair's chosen and rejected side, (N, 2) (0: nothing to score)."""
        counts = []
        for side in self.sides():
            labels = side[LABELS]
            if isinstance(labels, Ragged):
                seen = np.concatenate([[0], np.cumsum(labels.ids != LABEL_PAD)])
                counts.append(torch.from_numpy(seen[labels.offsets[1:]] - seen[labels.offsets[:-1]]))
            else:
                counts.append((labels != LABEL_PAD).sum(dim=1).cpu())
        return torch.stack(counts, dim=1)

    def pair_batch(self, idx: torch.Tensor) -> Batch:
        """Rows ``idx``: the chosen sides then the rejected sides, ``(2B, T)`` each input."""
        chosen, rejected = self.sides()
        device = self.y.device
        a = collate(chosen, idx, pad_id=self.pad_id, device=device)
        b = collate(rejected, idx, pad_id=self.pad_id, device=device)
        width = max(a[TOKENS].shape[1], b[TOKENS].shape[1])
        return {name: torch.cat([_pad_right(a[name], width, _pad_value(name, self.pad_id)),
                                 _pad_right(b[name], width, _pad_value(name, self.pad_id))]) for name in a}


def _pad_value(name: str, pad_id: PadIds) -> int | bool:
    if name == ATTENTION_MASK:
        return False
    if name == LABELS:
        return LABEL_PAD
    return int(pad_id.get(name, 0)) if isinstance(pad_id, Mapping) else int(pad_id)


def _pad_right(t: torch.Tensor, width: int, value: int | bool) -> torch.Tensor:
    if t.ndim != 2 or t.shape[1] == width:
        return t
    return F.pad(t, (0, width - t.shape[1]), value=value)


def side_logps(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A generation model's ``(2B, 2)`` (summed NLL, tokens) on a :meth:`PairBatchable.pair_batch`
    -> the chosen and rejected log-probabilities (B,) each and the token count of each side (2B,)."""
    b = out.shape[0] // 2
    logp = -out[:, 0]
    return logp[:b], logp[b:], out[:, 1]


class DPOObjective(Objective):
    """The DPO loss over a :class:`PairBatchable` (module docstring)."""

    def __init__(self, beta: float) -> None:
        super().__init__(self._unused)
        self.beta = beta

    @staticmethod
    def _unused(_logits: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        raise TypeError("the DPO objective reads pairs: call batch_loss")

    def batch_loss(self, forward: Callable[..., torch.Tensor], data: Batchable, idx: torch.Tensor) -> torch.Tensor:
        if not isinstance(data, PairBatchable):
            raise TypeError("the DPO objective trains on preference pairs (a PairBatchable)")
        chosen, rejected, _ = side_logps(forward(data.pair_batch(idx)))
        ref = data.y[idx]  # (B, 2)
        loss, _, _ = dpo_loss(chosen, rejected, ref[:, 0], ref[:, 1], self.beta)
        return loss.mean()

    def validate(self, model: nn.Module, data: Batchable, batch_size: int = 8) -> dict[str, float]:
        """``val_loss`` (the DPO loss), ``val_reward_accuracy`` and ``val_reward_margin`` over
        ``data``'s pairs, in eval mode without autograd."""
        if not isinstance(data, PairBatchable):
            raise TypeError("the DPO objective validates on preference pairs (a PairBatchable)")
        logps = sequence_logps(model, data, batch_size)
        loss, good, bad = dpo_loss(logps[:, 0], logps[:, 1], data.y[:, 0], data.y[:, 1], self.beta)
        return {"val_loss": float(loss.mean()), "val_reward_accuracy": float((good > bad).float().mean()),
                "val_reward_margin": float((good - bad).mean())}


def sequence_logps(model: nn.Module, data: PairBatchable, batch_size: int = 8, *,
                   counts: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The summed log-probability of each pair's chosen and rejected answer under ``model``,
    (N, 2), in eval mode without autograd (the mode is put back); ``counts`` (when given)
    receives each batch's labelled tokens per side (2B,)."""
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                idx = torch.arange(start, min(start + batch_size, len(data)))
                chosen, rejected, tokens = side_logps(model(data.pair_batch(idx)))
                out.append(torch.stack([chosen, rejected], dim=1))
                if counts is not None:
                    counts.append(tokens)
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, 2))


def encode_pairs(pre: Preprocessor, pairs: pl.DataFrame, prompt: str, target: str) -> PairBatchable:
    """``pairs`` (columns prompt, chosen, rejected) encoded by the fitted chat encoder of
    ``pre``: each side as prompt + answer, as an SFT row is."""
    import polars as pl

    from dataflywheel.features.batch import to_tensors

    sides = []
    for column in ("chosen", "rejected"):
        frame = pl.DataFrame({prompt: pairs["prompt"], target: pairs[column]})
        named = pre.transform(frame).inputs
        sides.append(to_tensors(named, list(named), dtype=torch.float32, device=torch.device("cpu")))
    return PairBatchable(sides[0], torch.zeros((pairs.height, 2)), pre.pad_ids_, sides[1])


def keep_rows(data: PairBatchable, keep: torch.Tensor) -> PairBatchable:
    """The pairs where ``keep`` (N,) bool is True."""
    rows = keep.nonzero().squeeze(1).numpy()
    chosen, rejected = data.sides()

    def take(inputs: dict[str, torch.Tensor | Ragged]) -> dict[str, torch.Tensor | Ragged]:
        return {k: v.take(rows) if isinstance(v, Ragged) else v[torch.from_numpy(rows)] for k, v in inputs.items()}

    return PairBatchable(take(chosen), data.y[keep], data.pad_id, take(rejected))


@dataclass
class ReferenceCache:
    """Reference log-probabilities kept as safetensors under ``folder``, one file per key."""

    folder: Path

    @staticmethod
    def key(reference: str, pairs: pl.DataFrame, encoding: dict[str, Any]) -> str:
        """A name for (the reference model, the pairs, how they are encoded)."""
        digest = hashlib.sha256(reference.encode())
        digest.update(json.dumps(encoding, sort_keys=True, default=str).encode())
        for row in pairs.select("prompt", "chosen", "rejected").iter_rows():
            digest.update(json.dumps(row).encode())
        return digest.hexdigest()[:24]

    def get(self, key: str, rows: int) -> torch.Tensor | None:
        from safetensors.torch import load_file

        path = self.folder / f"{key}.safetensors"
        if not path.is_file():
            return None
        try:
            logps = load_file(str(path))["logps"]
        except Exception:  # noqa: BLE001 - a damaged cache file is computed again
            return None
        return logps if tuple(logps.shape) == (rows, 2) else None

    def put(self, key: str, logps: torch.Tensor) -> None:
        import os

        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{key}.safetensors"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file({"logps": logps.detach().cpu().contiguous()}, str(tmp))
        os.replace(tmp, path)
