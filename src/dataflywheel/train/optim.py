"""Optimiser and learning-rate schedule, each built from :class:`TrainConfig` (the loss is the
objective's: :mod:`dataflywheel.train.objective`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from dataflywheel.config import ScheduleConfig, TrainConfig
from dataflywheel.errors import ConfigError


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (with ``cfg.momentum``), at ``cfg.lr`` and ``cfg.weight_decay``."""
    params = list(params)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise ConfigError(
        f"must be adam, adamw or sgd (got {cfg.optimizer!r})", where="train.optimizer"
    )


def lr_factor(schedule: ScheduleConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base LR before optimiser step ``step`` (0-based): a linear warm-up
    over ``warmup_steps``, then constant, linear-to-zero or cosine-to-zero over the rest."""
    warmup, decay = schedule.warmup_steps, schedule.decay
    span = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / span)
        if decay == "linear":
            return 1.0 - progress
        if decay == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
) -> LambdaLR | None:
    """A per-step LambdaLR, or None when the schedule is a constant LR (no per-step cost)."""
    if cfg.schedule.warmup_steps == 0 and cfg.schedule.decay == "constant":
        return None
    return LambdaLR(optimizer, lr_factor(cfg.schedule, total_steps))
