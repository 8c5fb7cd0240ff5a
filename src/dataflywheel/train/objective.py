"""The training objective: the loss over a batch, looked up by name.

An :class:`Objective` turns a model's outputs on a batch into the scalar the optimiser
minimises (and the ``loss``/``val_loss`` the history logs). The built-in ones wrap a torch
loss on logits, or (``sft``) average the per-token losses a generation model sums per row;
:func:`make_objective` picks the one the task names (``Task.loss``, or ``train.loss`` when set).
An objective that needs more than one forward per batch (paired chosen/rejected texts) overrides
:meth:`Objective.batch_loss`, which the training loop calls for every batch that is not a plain
table. ``fit(..., objective=...)`` takes one directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from dataflywheel.errors import ConfigError

if TYPE_CHECKING:
    from dataflywheel.config import TrainConfig
    from dataflywheel.train.loop import Batchable

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(logits (B, n_outputs), y (B,)) -> scalar`` (mean over the batch)."""


class Objective:
    """The loss over a batch from a loss on ``(logits, y)``; ``loss`` is that function."""

    def __init__(self, loss: LossFn) -> None:
        self.loss = loss

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, y)

    def batch_loss(self, forward: Callable[..., torch.Tensor], data: Batchable, idx: torch.Tensor) -> torch.Tensor:
        """The loss of rows ``idx`` of ``data`` under the model call ``forward``."""
        return self.loss(data.forward(forward, idx), data.y[idx])


ObjectiveFactory = Callable[[str], Objective]
"""``factory(reduction) -> Objective``; reduction ``mean`` for training."""

_OBJECTIVES: dict[str, ObjectiveFactory] = {}


def register_objective(name: str, factory: ObjectiveFactory) -> None:
    """Make ``factory`` the objective of loss name ``name``; a name can be registered once."""
    if name in _OBJECTIVES:
        raise ValueError(f"objective {name!r} is already registered")
    _OBJECTIVES[name] = factory


def available_objectives() -> list[str]:
    return sorted(_OBJECTIVES)


def resolve_loss(loss: str, task: str) -> str:
    """The loss name for ``train.loss`` (``auto`` picks the task's); a mismatch is a ConfigError."""
    from dataflywheel.tasks import get_task

    expected = get_task(task).loss
    if loss not in ("auto", expected):
        raise ConfigError(
            f"{loss} does not fit a {task} task", where="train.loss", fix=f"use auto or {expected}"
        )
    return expected


def make_objective(cfg: TrainConfig, task: str, *, reduction: str = "mean") -> Objective:
    """The registered objective of the task's loss (see :attr:`Task.loss`)."""
    name = resolve_loss(cfg.loss, task)
    try:
        factory = _OBJECTIVES[name]
    except KeyError:
        raise ConfigError(f"no objective is registered for loss {name!r}", where="train.loss",
                          fix=f"register one with register_objective, or use one of {available_objectives()}") from None
    return factory(reduction)


def _squeezed(base: nn.Module) -> Objective:
    return Objective(lambda logits, y: base(logits.squeeze(-1), y))


def token_mean_nll(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``sft``: a generation model's per-row ``(summed NLL, tokens)`` (B, 2) -> the mean negative
    log-likelihood per completion token of the batch (``y`` is the task's placeholder). A batch
    with no labelled token (every row rejected) is 0."""
    return outputs[:, 0].sum() / outputs[:, 1].sum().clamp_min(1.0)


register_objective("cross_entropy", lambda reduction: Objective(nn.CrossEntropyLoss(reduction=reduction)))
register_objective("bce", lambda reduction: _squeezed(nn.BCEWithLogitsLoss(reduction=reduction)))
register_objective("mse", lambda reduction: _squeezed(nn.MSELoss(reduction=reduction)))
register_objective("sft", lambda reduction: Objective(token_mean_nll))
