"""The one training loop, used by every model type.

Mini-batches come from a shuffled index permutation over in-memory tensors (no DataLoader:
at tabular sizes its per-batch overhead rivals the model's own cost). Everything optional
(early stopping, checkpoints, progress) is a callback; the loop itself only steps.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dataflywheel.config import TrainConfig, resolve_early_stopping
from dataflywheel.errors import DataError
from dataflywheel.models.predict import logits_to_output, predict_logits
from dataflywheel.runtime import set_threads
from dataflywheel.train.callbacks import (
    Callback,
    Checkpoint,
    EarlyStopping,
    Logs,
    Progress,
    TrainState,
    overrides,
)
from dataflywheel.train.checkpoint import load_checkpoint, restore
from dataflywheel.train.optim import LossFn, make_loss, make_optimizer, make_scheduler

Metric = Callable[[np.ndarray, np.ndarray], float]
"""``metric(y_true, y_pred)``: y_pred as :func:`~dataflywheel.models.predict.predict_proba`
returns it (p(class 1) for binary, (N, k) probabilities for multiclass, values for regression)."""


@dataclass
class Batchable:
    """Model inputs and target: ``numeric`` (N, n_numeric) float, ``categorical`` (N, n_cat)
    long, ``y`` (N,) float for bce/mse or long for cross-entropy."""

    numeric: torch.Tensor
    categorical: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class History:
    """One log dict per epoch: epoch, loss, val_loss, val_<metric>..., lr, seconds."""

    epochs: list[dict[str, Any]]
    best_epoch: int | None
    stopped_early: bool
    threads: int
    resumed_from: int | None
    seconds: float


def fit(
    model: nn.Module,
    train: Batchable,
    valid: Batchable | None,
    cfg: TrainConfig,
    task: str,
    *,
    metrics: dict[str, Metric] | None = None,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> History:
    """Train ``model`` in place for ``cfg.epochs`` epochs and return its :class:`History`.

    Deterministic on CPU for a given ``cfg.seed`` (the caller seeds the model's initialisation).
    ``metrics`` are computed on ``valid`` after every epoch and logged as ``val_<name>``.
    ``cfg.early_stopping`` adds :class:`EarlyStopping` when ``valid`` is given; ``checkpoint_dir``
    adds :class:`Checkpoint`; ``resume=True`` continues from its latest checkpoint, if any.
    """
    started = time.perf_counter()
    dtype = _float_dtype(model)
    train = _prepare(train, task, dtype, "train")
    valid = _prepare(valid, task, dtype, "valid") if valid is not None and len(valid) else None
    n_params = sum(p.numel() for p in model.parameters())
    threads = set_threads(cfg.threads, n_params)
    torch.manual_seed(cfg.seed)

    loss_fn = make_loss(cfg, task)
    optimizer = make_optimizer(model.parameters(), cfg)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    state = TrainState(
        model=model,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, cfg, cfg.epochs * steps_per_epoch),
        generator=torch.Generator().manual_seed(cfg.seed),
        cfg=cfg,
        task=task,
        epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=_arrange(callbacks, cfg, task, tuple(metrics or ()), valid is not None, checkpoint_dir, progress),
    )
    for cb in state.callbacks:
        cb.set_state(state)
    resumed_from = None
    if resume:
        if checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir")
        loaded = load_checkpoint(checkpoint_dir)
        if loaded is not None:
            restore(state, *loaded)
            resumed_from = state.epoch

    batch_hooks = [cb for cb in state.callbacks if overrides(cb, "on_batch_end")]
    try:
        for cb in state.callbacks:
            cb.on_train_begin(state)
        while state.epoch < state.epochs and not state.stop:
            epoch = state.epoch + 1
            for cb in state.callbacks:
                cb.on_epoch_begin(epoch)
            t0 = time.perf_counter()
            logs: Logs = {"epoch": epoch, **train_epoch(state, train, loss_fn, batch_hooks)}
            if valid is not None:
                logs.update(validate(model, valid, loss_fn, task, metrics or {}))
            logs["seconds"] = time.perf_counter() - t0
            state.epoch = epoch
            state.history.append(logs)
            for cb in state.callbacks:
                cb.on_epoch_end(epoch, logs)
        for cb in state.callbacks:
            cb.on_train_end(state)
    except BaseException:
        for cb in state.callbacks:
            if isinstance(cb, Progress):
                cb.on_train_end(state)
        raise

    return History(
        epochs=state.history,
        best_epoch=state.best_epoch
        if state.best_epoch is not None
        else _lowest_val_loss(state.history),
        stopped_early=state.stop and state.epoch < state.epochs,
        threads=threads,
        resumed_from=resumed_from,
        seconds=time.perf_counter() - started,
    )


def train_epoch(
    state: TrainState, data: Batchable, loss_fn: LossFn, hooks: Sequence[Callback]
) -> Logs:
    """One pass over ``data`` in a fresh random order; returns ``{"loss", "lr"}`` (mean loss
    over rows, LR of the last step)."""
    model, optimizer, scheduler = state.model, state.optimizer, state.scheduler
    bs, clip = state.cfg.batch_size, state.cfg.grad_clip
    params = [p for p in model.parameters() if p.requires_grad]
    group = optimizer.param_groups[0]
    model.train()
    n = len(data)
    perm = torch.randperm(n, generator=state.generator)  # (N,)
    losses: list[torch.Tensor] = []
    lr = group["lr"]
    for start in range(0, n, bs):
        idx = perm[start : start + bs]  # (B,)
        lr = group["lr"]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(data.numeric[idx], data.categorical[idx]), data.y[idx])
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        state.step += 1
        losses.append(loss.detach())
        if hooks:
            logs = {"loss": losses[-1], "lr": lr}
            for cb in hooks:
                cb.on_batch_end(state.step, logs)
    sizes = torch.full((len(losses),), float(bs), dtype=torch.float64)
    sizes[-1] = n - bs * (len(losses) - 1)
    mean = float((torch.stack(losses).to(torch.float64) * sizes).sum() / n)
    return {"loss": mean, "lr": float(lr)}


def validate(
    model: nn.Module, data: Batchable, loss_fn: LossFn, task: str, metrics: dict[str, Metric]
) -> Logs:
    """``val_loss`` and ``val_<name>`` for each metric, in eval mode without autograd."""
    logits = predict_logits(model, data.numeric, data.categorical)
    with torch.no_grad():
        logs: Logs = {"val_loss": float(loss_fn(logits, data.y))}
    if metrics:
        y_true, y_pred = data.y.cpu().numpy(), logits_to_output(logits, task)
        for name, metric in metrics.items():
            logs[f"val_{name}"] = float(metric(y_true, y_pred))
    return logs


def _arrange(
    callbacks: Sequence[Callback],
    cfg: TrainConfig,
    task: str,
    logged: tuple[str, ...],
    has_valid: bool,
    checkpoint_dir: Path | None,
    progress: bool,
) -> list[Callback]:
    cbs = list(callbacks)
    es = cfg.early_stopping
    if es is not None and has_valid and not any(isinstance(c, EarlyStopping) for c in cbs):
        metric, mode = resolve_early_stopping(es, task, logged)
        cbs.append(EarlyStopping(metric, mode, es.patience, es.min_delta))
    if progress and sys.stderr.isatty() and not any(isinstance(c, Progress) for c in cbs):
        cbs.append(Progress())
    if checkpoint_dir is not None and not any(isinstance(c, Checkpoint) for c in cbs):
        cbs.append(Checkpoint(checkpoint_dir))
    # Checkpoints last, so they record the other callbacks' end-of-epoch state.
    return [c for c in cbs if not isinstance(c, Checkpoint)] + [
        c for c in cbs if isinstance(c, Checkpoint)
    ]


def _float_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def _prepare(data: Batchable, task: str, dtype: torch.dtype, name: str) -> Batchable:
    n = len(data)
    if n == 0:
        raise DataError(
            f"the {name} split is empty", where=name, fix="add rows or change data.split"
        )
    if data.numeric.shape[0] != n or data.categorical.shape[0] != n:
        raise DataError(
            f"numeric {tuple(data.numeric.shape)}, categorical {tuple(data.categorical.shape)} and "
            f"y {tuple(data.y.shape)} differ in rows",
            where=name,
        )
    y = data.y.long() if task == "multiclass" else data.y.to(dtype)
    return Batchable(data.numeric.to(dtype), data.categorical.long(), y)


def _lowest_val_loss(history: list[Logs]) -> int | None:
    scored = [
        (h["val_loss"], h["epoch"])
        for h in history
        if "val_loss" in h and not math.isnan(h["val_loss"])
    ]
    return min(scored)[1] if scored else None
