"""The one training loop, used by every model type.

Mini-batches come from a shuffled index permutation over in-memory tensors (no DataLoader:
at tabular sizes its per-batch overhead rivals the model's own cost); text batches are padded
per batch and drawn length-bucketed (:mod:`dataflywheel.train.batching`). Gradient
accumulation, ``max_steps``, step-wise evaluation, bf16 autocast, gradient checkpointing and
``torch.compile`` are settings of the same loop, which runs on the CPU or a CUDA GPU (``train.device``): the data
tensors move to the device once, text batches as they are padded. Everything optional (early
stopping, checkpoints, progress) is a callback; the loop itself only steps.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dataflywheel.config import TrainConfig, resolve_early_stopping
from dataflywheel.errors import ConfigError
from dataflywheel.features.batch import model_reads
from dataflywheel.models.capabilities import CheckpointsActivations
from dataflywheel.models.predict import logits_to_output, predict_logits
from dataflywheel.runtime import bf16_supported, set_threads
from dataflywheel.tasks import get_task
from dataflywheel.train.batching import Batchable, batch_order, prepare_batchable
from dataflywheel.train.callbacks import (
    Callback,
    Checkpoint,
    EarlyStopping,
    EpochLines,
    Logs,
    Progress,
    TrainState,
    overrides,
)
from dataflywheel.train.checkpoint import load_checkpoint, restore
from dataflywheel.train.objective import Objective, make_objective
from dataflywheel.train.optim import make_optimizer, make_scheduler
from dataflywheel.train.strategy import SingleDevice, Strategy
from dataflywheel.train.usage import peak_memory_mb, reset_peak_memory

__all__ = ["Batchable", "History", "Metric", "fit", "train_epoch", "validate"]

Metric = Callable[[np.ndarray, np.ndarray], float]
"""``metric(y_true, y_pred)``: y_pred as :func:`~dataflywheel.models.predict.predict_proba`
returns it (p(class 1) for binary, (N, k) probabilities for multiclass, values for regression)."""


@dataclass
class History:
    """One log dict per epoch: epoch, loss, val_loss, val_<metric>..., lr, seconds; a text model's
    also tokens (trained on), tokens_per_s (of the training pass) and peak_memory_mb."""

    epochs: list[dict[str, Any]]
    best_epoch: int | None
    stopped_early: bool
    threads: int
    resumed_from: int | None
    seconds: float
    device: str = "cpu"
    """Where the model was trained (``cpu``, ``cuda:0``)."""
    evals: list[dict[str, Any]] = field(default_factory=list)
    """With ``eval_every_steps``: one log dict per evaluation (step, epoch, val_loss, ...)."""
    reached_max_steps: bool = False
    epochs_planned: int | None = None
    stop_reason: str | None = None
    """Why training ended before ``epochs_planned`` (early stopping, max_steps), else None."""
    kept_epoch: int | None = None
    """The epoch whose weights the model holds (early stopping puts back its best epoch's)."""

    def throughput(self) -> dict[str, float]:
        """A text model's ``tokens_per_s`` over every epoch's training pass and its
        ``peak_memory_mb`` (:mod:`~dataflywheel.train.usage`); empty for other models."""
        timed = [e for e in self.epochs if e.get("tokens_per_s")]
        if not timed:
            return {}
        seconds = sum(e["tokens"] / e["tokens_per_s"] for e in timed)
        return {"tokens_per_s": sum(e["tokens"] for e in timed) / seconds,
                "peak_memory_mb": max(float(e["peak_memory_mb"]) for e in timed)}

    def summary(self) -> str:
        """One sentence: how many epochs ran, why training stopped early, which weights were kept."""
        last = self.epochs[-1]["epoch"] if self.epochs else (self.resumed_from or 0)
        planned = self.epochs_planned or last
        kept = self.kept_epoch or last
        weights = f"; kept the weights of epoch {kept}" + (" (the best)" if kept != last else " (the last)")
        if self.stop_reason is not None:
            return f"training stopped after epoch {last} of {planned}: {self.stop_reason}{weights}"
        return f"trained {last} of {planned} epochs{weights}"


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
    log: Callable[[str], None] | None = None,
    target_scale: float | None = None,
    objective: Objective | None = None,
    strategy: Strategy | None = None,
) -> History:
    """Train ``model`` in place for ``cfg.epochs`` epochs and return its :class:`History`.

    The model moves to ``cfg.device`` (see :func:`~dataflywheel.runtime.resolve_device`) and stays
    there. Deterministic on CPU for a given ``cfg.seed`` (the caller seeds the model's
    initialisation).
    ``metrics`` are computed on ``valid`` after every epoch and logged as ``val_<name>``; with
    ``cfg.eval_every_steps`` also every N optimiser steps (``History.evals``, callbacks'
    ``on_evaluate``). One optimiser step takes ``cfg.grad_accumulation`` mini-batches of
    ``cfg.batch_size`` rows; ``cfg.max_steps`` ends training after that many steps.
    ``cfg.early_stopping`` adds :class:`EarlyStopping` when ``valid`` is given; ``checkpoint_dir``
    adds :class:`Checkpoint`; ``resume=True`` continues from its latest checkpoint, if any.
    ``progress`` shows a live bar when stderr is a terminal and, when stdout is not one (a pipe,
    a file, CI), one line per epoch through ``log`` (:class:`EpochLines`). ``target_scale``
    (regression: the target's standard deviation) adds ``rmse`` and ``val_rmse`` in the
    target's units to each epoch's logs; progress shows those. ``objective`` (default: the
    task's loss, :func:`~dataflywheel.train.objective.make_objective`) is the loss over a batch;
    ``strategy`` (default :class:`~dataflywheel.train.strategy.SingleDevice`) places the model
    and runs autocast, backward and the optimiser step.
    """
    started = time.perf_counter()
    n_params = sum(p.numel() for p in model.parameters())
    strategy = strategy if strategy is not None else SingleDevice(bf16_supported)
    device = strategy.place(model, cfg)
    if cfg.gradient_checkpointing:
        if not isinstance(model, CheckpointsActivations):
            raise ConfigError(f"a {type(model).__name__} cannot recompute its activations",
                              where="train.gradient_checkpointing", fix="set it to false")
        model.enable_gradient_checkpointing()
    reset_peak_memory(device)
    dtype = _float_dtype(model)
    reads = model_reads(model)
    train = prepare_batchable(train, task, dtype, "train", device, reads)
    valid = prepare_batchable(valid, task, dtype, "valid", device, reads) if valid is not None and len(valid) else None
    threads = set_threads(cfg.threads, n_params)
    torch.manual_seed(cfg.seed)

    loss_fn = objective if objective is not None else make_objective(cfg, task)
    optimizer = make_optimizer(model.parameters(), cfg)
    steps_per_epoch = math.ceil(math.ceil(len(train) / cfg.batch_size) / cfg.grad_accumulation)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    state = TrainState(
        model=model,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, cfg, total_steps),
        generator=torch.Generator().manual_seed(cfg.seed),
        cfg=cfg,
        task=task,
        epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=_arrange(callbacks, cfg, task, tuple(metrics or ()), valid is not None, checkpoint_dir, progress,
                           log),
        target_scale=target_scale if get_task(task).loss_in_target_units else None,
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
    runner = _Runner(state, train, valid, loss_fn, metrics or {}, batch_hooks, strategy)
    try:
        for cb in state.callbacks:
            cb.on_train_begin(state)
        while state.epoch < state.epochs and not state.stop and not runner.reached_max_steps:
            epoch = state.epoch + 1
            for cb in state.callbacks:
                cb.on_epoch_begin(epoch)
            t0 = time.perf_counter()
            logs: Logs = {"epoch": epoch, **runner.epoch()}
            if "tokens" in logs:
                logs["tokens_per_s"] = logs["tokens"] / max(time.perf_counter() - t0, 1e-9)
                logs["peak_memory_mb"] = peak_memory_mb(device)
            if valid is not None:
                logs.update(validate(model, valid, loss_fn, task, metrics or {}))
            if state.target_scale is not None:
                for key in ("loss", "val_loss"):
                    if key in logs and math.isfinite(logs[key]):
                        logs[key.replace("loss", "rmse")] = math.sqrt(max(logs[key], 0.0)) * state.target_scale
            logs["seconds"] = time.perf_counter() - t0
            state.epoch = epoch
            state.history.append(logs)
            for cb in state.callbacks:
                cb.on_epoch_end(epoch, logs)
        stopped_early = state.stop and state.epoch < state.epochs
        if runner.reached_max_steps and state.epoch < state.epochs:
            state.stop_reason = f"reached train.max_steps ({cfg.max_steps} optimiser steps)"
        elif not stopped_early:
            state.stop_reason = None
        elif state.stop_reason is None:
            state.stop_reason = "a callback asked to stop"
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
        stopped_early=state.stop and state.epoch < state.epochs and not runner.reached_max_steps,
        threads=threads,
        device=str(device),
        resumed_from=resumed_from,
        seconds=time.perf_counter() - started,
        evals=state.evals,
        reached_max_steps=runner.reached_max_steps,
        epochs_planned=state.epochs,
        stop_reason=state.stop_reason,
        kept_epoch=state.kept_epoch if state.kept_epoch is not None else state.epoch or None,
    )


class _Runner:
    """What one epoch needs, resolved once per ``fit``: the forward callable (compiled or
    not), the objective and strategy, the step-wise evaluation."""

    def __init__(self, state: TrainState, train: Batchable, valid: Batchable | None, loss_fn: Objective,
                 metrics: dict[str, Metric], hooks: Sequence[Callback], strategy: Strategy) -> None:
        cfg = state.cfg
        self.state, self.train, self.valid, self.loss_fn = state, train, valid, loss_fn
        self.metrics, self.hooks, self.strategy = metrics, hooks, strategy
        self.reached_max_steps = cfg.max_steps is not None and state.step >= cfg.max_steps
        self.forward: Callable[..., torch.Tensor] = state.model
        if cfg.compile:
            self.forward = torch.compile(state.model, dynamic=not train.dense)
        self.lengths = train.lengths if cfg.bucket_by_length else None

    def evaluate(self) -> None:
        state = self.state
        assert self.valid is not None
        logs: Logs = {"step": state.step, "epoch": state.epoch + 1,
                      **validate(state.model, self.valid, self.loss_fn, state.task, self.metrics)}
        state.evals.append(logs)
        for cb in state.callbacks:
            cb.on_evaluate(state.step, logs)

    def epoch(self) -> Logs:
        state = self.state
        every = state.cfg.eval_every_steps if self.valid is not None else None
        batches = batch_order(len(self.train), state.cfg.batch_size, state.generator, self.lengths)
        return train_epoch(state, self.train, self.loss_fn, self.hooks, batches=batches, runner=self,
                           eval_every=every, strategy=self.strategy)


def train_epoch(
    state: TrainState,
    data: Batchable,
    objective: Objective,
    hooks: Sequence[Callback],
    *,
    batches: list[torch.Tensor] | None = None,
    runner: _Runner | None = None,
    eval_every: int | None = None,
    strategy: Strategy | None = None,
) -> Logs:
    """One pass over ``data`` (``batches``: row indices per mini-batch, default a fresh random
    order); returns ``{"loss", "lr"}`` (mean loss over the rows seen, LR of the last step), and
    for ragged (text) inputs ``tokens``, the token count of the rows trained on.
    Each optimiser step sums the gradients of ``grad_accumulation`` mini-batches, each
    weighted by its share of the step's rows (so it equals one batch of all those rows).
    Sets ``state.stop`` when ``max_steps`` is reached, possibly mid-epoch."""
    model, optimizer, scheduler = state.model, state.optimizer, state.scheduler
    cfg = state.cfg
    clip, accum, max_steps = cfg.grad_clip, cfg.grad_accumulation, cfg.max_steps
    params = [p for p in model.parameters() if p.requires_grad]
    group = optimizer.param_groups[0]
    forward = runner.forward if runner is not None else model
    strategy = strategy if strategy is not None else SingleDevice()
    autocast = strategy.autocast()
    backward, step = strategy.backward, strategy.step
    loss_fn, batch_loss = objective.loss, objective.batch_loss
    model.train()
    if batches is None:
        batches = batch_order(len(data), cfg.batch_size, state.generator)
    losses: list[torch.Tensor] = []
    sizes: list[int] = []
    lr = group["lr"]
    # The common case, a table in full precision with a plain objective, skips per-step indirection.
    direct = data.dense and autocast is None and type(objective).batch_loss is Objective.batch_loss
    # direct: every input is a dense tensor (data.dense), so the filter keeps them all.
    inputs = [(k, v) for k, v in data.inputs.items() if isinstance(v, torch.Tensor)] if direct else []
    y = data.y
    lengths = data.lengths  # (N,) tokens per row of a text split, else None
    tokens = 0
    for first in range(0, len(batches), accum):
        if max_steps is not None and state.step >= max_steps:
            break
        micro = batches[first : first + accum] if accum > 1 else (batches[first],)
        rows = sum(len(idx) for idx in micro) if accum > 1 else 0
        lr = group["lr"]
        optimizer.zero_grad(set_to_none=True)
        for idx in micro:  # (B,) row indices
            if direct:  # dense inputs: the batch is a row selection of each
                loss = loss_fn(forward({k: v[idx] for k, v in inputs}), y[idx])
            elif autocast is not None:
                with strategy.autocast() or nullcontext():
                    loss = batch_loss(forward, data, idx)
            else:
                loss = batch_loss(forward, data, idx)
            backward(loss if len(micro) == 1 else loss * (len(idx) / rows))
            losses.append(loss.detach())
            sizes.append(len(idx))
            if lengths is not None:
                tokens += int(lengths[idx.cpu()].sum())
        step(optimizer, params, clip)
        if scheduler is not None:
            scheduler.step()
        state.step += 1
        if hooks:
            logs = {"loss": losses[-1], "lr": lr}
            for cb in hooks:
                cb.on_batch_end(state.step, logs)
        if eval_every is not None and runner is not None and state.step % eval_every == 0:
            runner.evaluate()
            model.train()
    if max_steps is not None and state.step >= max_steps:
        state.stop = True
        if runner is not None:
            runner.reached_max_steps = True
    counted: Logs = {} if lengths is None else {"tokens": tokens}
    if not losses:
        return {"loss": float("nan"), "lr": float(lr), **counted}
    weights = torch.tensor(sizes, dtype=torch.float64)
    mean = float((torch.stack(losses).cpu().to(torch.float64) * weights).sum() / weights.sum())
    return {"loss": mean, "lr": float(lr), **counted}


def validate(
    model: nn.Module, data: Batchable, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], task: str,
    metrics: dict[str, Metric],
) -> Logs:
    """``val_loss`` and ``val_<name>`` for each metric, in eval mode without autograd (an
    objective with its own ``validate``, such as DPO's over pairs, gives its logs instead)."""
    own = getattr(loss_fn, "validate", None)
    if callable(own):
        logs: Logs = own(model, data)
        return logs
    logits = predict_logits(model, data.inputs, pad_id=data.pad_id)
    with torch.no_grad():
        logs = {"val_loss": float(loss_fn(logits, data.y))}
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
    log: Callable[[str], None] | None = None,
) -> list[Callback]:
    cbs = list(callbacks)
    es = cfg.early_stopping
    if es is not None and has_valid and not any(isinstance(c, EarlyStopping) for c in cbs):
        metric, mode = resolve_early_stopping(es, task, logged)
        cbs.append(EarlyStopping(metric, mode, es.patience, es.min_delta))
    if progress and sys.stderr.isatty() and not any(isinstance(c, Progress) for c in cbs):
        cbs.append(Progress())
    lines = progress and log is not None and not _is_terminal(sys.stdout)
    if lines and log is not None and not any(isinstance(c, EpochLines) for c in cbs):
        cbs.append(EpochLines(log))
    if checkpoint_dir is not None and not any(isinstance(c, Checkpoint) for c in cbs):
        cbs.append(Checkpoint(checkpoint_dir))
    # Checkpoints last, so they record the other callbacks' end-of-epoch state.
    return [c for c in cbs if not isinstance(c, Checkpoint)] + [
        c for c in cbs if isinstance(c, Checkpoint)
    ]


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


def _float_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def _lowest_val_loss(history: list[Logs]) -> int | None:
    scored = [
        (h["val_loss"], h["epoch"])
        for h in history
        if "val_loss" in h and not math.isnan(h["val_loss"])
    ]
    return min(scored)[1] if scored else None
