"""Callbacks (Keras 3 style) and the :class:`TrainState` they see.

A callback overrides any of the no-op hooks below. ``fit`` calls :meth:`Callback.set_state`
first, so every hook can read and change ``self.state`` (the model, optimiser, epoch, step,
history); setting ``self.state.stop = True`` ends training after the current epoch.
A callback with state to resume (early stopping's best value, ...) returns it from
:meth:`Callback.state_dict` (tensors and JSON types) and takes it back in ``load_state_dict``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from dataflywheel.config import TrainConfig
from dataflywheel.errors import ConfigError
from dataflywheel.evaluate.metrics import format_metric
from dataflywheel.models.weights import load_trained_weights, trained_weights

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

Logs = dict[str, Any]


@dataclass
class TrainState:
    """A training run as callbacks see it. ``epoch`` counts completed epochs and ``step``
    optimiser steps; ``history`` holds one log dict per completed epoch."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    generator: torch.Generator
    cfg: TrainConfig
    task: str
    epochs: int
    steps_per_epoch: int
    callbacks: list[Callback] = field(default_factory=list)
    epoch: int = 0
    step: int = 0
    stop: bool = False
    history: list[Logs] = field(default_factory=list)
    evals: list[Logs] = field(default_factory=list)
    """With ``train.eval_every_steps``: one log dict per step-wise evaluation."""
    best_metric: str | None = None
    best_value: float | None = None
    best_epoch: int | None = None
    target_scale: float | None = None
    """Regression: the target's standard deviation, so losses show as RMSE in its units."""
    stop_reason: str | None = None
    """Why training stopped before ``epochs`` (early stopping, max_steps), set by whoever stopped it."""
    kept_epoch: int | None = None
    """The epoch whose weights the model holds after training (None: the last one)."""

    def keyed_callbacks(self) -> Iterator[tuple[str, Callback]]:
        """Each callback with a stable key (its class name, numbered when repeated)."""
        seen: dict[str, int] = {}
        for cb in self.callbacks:
            name = type(cb).__name__
            seen[name] = seen.get(name, 0) + 1
            yield (name if seen[name] == 1 else f"{name}{seen[name]}"), cb


class Callback:
    """Base class: every hook is a documented no-op."""

    state: TrainState

    def set_state(self, state: TrainState) -> None:
        self.state = state

    def on_train_begin(self, state: TrainState) -> None:
        """Before the first epoch (also on resume, after the checkpoint is loaded)."""

    def on_train_end(self, state: TrainState) -> None:
        """After the last epoch, or after a stop request."""

    def on_epoch_begin(self, epoch: int) -> None:
        """Before epoch ``epoch`` (1-based) starts."""

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        """After epoch ``epoch``: ``logs`` has loss, val_loss, val_<metric>, lr, seconds."""

    def on_batch_end(self, step: int, logs: Logs) -> None:
        """After optimiser step ``step`` (1-based, over the whole run). ``logs["loss"]`` is a
        detached 0-dim tensor (call ``float()``: that syncs, so do it only when needed).
        Called only for callbacks that override it, so the loop stays cheap."""

    def on_evaluate(self, step: int, logs: Logs) -> None:
        """After a step-wise evaluation (``train.eval_every_steps``) at optimiser step ``step``:
        ``logs`` has step, epoch (the one in progress), val_loss and val_<metric>."""

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (tensors and JSON types); empty for stateless callbacks."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`state_dict` returned."""


def overrides(cb: Callback, hook: str) -> bool:
    return getattr(type(cb), hook) is not getattr(Callback, hook)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs; at the end, put back the best epoch's weights if ``restore_best_weights``."""

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: Literal["min", "max"] = "min",
        patience: int = 10,
        min_delta: float = 0.0,
        restore_best_weights: bool = True,
    ) -> None:
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_delta, self.restore_best_weights = min_delta, restore_best_weights
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.wait = 0
        self.best_weights: dict[str, torch.Tensor] | None = None

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        if self.monitor not in logs:
            known = sorted(k for k in logs if k.startswith("val_"))
            raise ConfigError(
                f"metric {self.monitor!r} is not logged",
                where="train.early_stopping.metric",
                fix=f"use one of {known}",
            )
        value = float(logs[self.monitor])
        if math.isnan(value):
            self.wait += 1
        elif self.improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = {
                    k: v.detach().clone() for k, v in trained_weights(self.state.model).items()
                }
        else:
            self.wait += 1
        self.state.best_metric, self.state.best_value = self.monitor, self.best
        self.state.best_epoch = self.best_epoch
        if self.wait >= self.patience:
            self.state.stop = True
            scale = self.state.target_scale
            units = (f", rmse {format_metric('rmse', math.sqrt(max(self.best, 0.0)) * scale)} in the target's units"
                     if scale is not None and self.monitor == "val_loss" else "")
            best = "" if self.best_epoch is None else (
                f" (best {format_metric(self.monitor, self.best)}{units} at epoch {self.best_epoch})")
            delta = f"by more than {self.min_delta:g} " if self.min_delta else ""
            self.state.stop_reason = (f"early stopping: {self.monitor} did not improve {delta}for {self.patience} "
                                      f"epoch{'s' if self.patience != 1 else ''}{best}")

    def on_train_end(self, state: TrainState) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            load_trained_weights(state.model, self.best_weights)
            state.kept_epoch = self.best_epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_weights = state.get("best_weights")


class Checkpoint(Callback):
    """Write a resumable checkpoint (see :mod:`dataflywheel.train.checkpoint`) after every
    epoch into ``directory``, keeping the newest ``keep``. ``fit`` runs it after the other
    callbacks, so it records their end-of-epoch state."""

    def __init__(self, directory: str | Path, *, keep: int = 1) -> None:
        self.directory, self.keep = Path(directory), keep
        self.last: Path | None = None

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        from dataflywheel.train.checkpoint import save_checkpoint, snapshot

        weights, saved = snapshot(self.state)
        self.last = save_checkpoint(self.directory, weights, saved, keep=self.keep)


def epoch_values(logs: Logs) -> list[tuple[str, float]]:
    """What a progress display shows of an epoch's ``logs``: the training loss, the first
    validation metric and the validation loss; for regression the RMSE in the target's units
    (``rmse``, ``val_rmse``) instead of the standardised losses."""
    if "rmse" in logs:
        extra = [k for k in logs if k.startswith("val_") and k not in ("val_loss", "val_rmse")][:1]
        shown = ["rmse", "val_rmse", *extra]
    else:
        shown = ["loss", *[k for k in logs if k.startswith("val_") and k != "val_loss"][:1], "val_loss"]
    return [(k, float(logs[k])) for k in shown if k in logs]


class EpochLines(Callback):
    """One line per epoch through ``log`` (for output that is not a terminal, where a live bar
    renders nothing): ``epoch 3/50: loss 0.41234, val_accuracy 0.8765, val_loss 0.39120 (2.1 s)``."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log

    def on_train_begin(self, state: TrainState) -> None:
        if state.epoch:
            self.log(f"resuming after epoch {state.epoch}/{state.epochs}")

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        values = ", ".join(f"{k} {format_metric(k, v)}" for k, v in epoch_values(logs))
        self.log(f"epoch {epoch}/{self.state.epochs}: {values} ({float(logs.get('seconds', 0.0)):.1f} s)")


class Progress(Callback):
    """A Rich progress bar over all steps, showing epoch, live loss and the validation metric.
    Renders nothing when the console is not a terminal; redraws at most every ``refresh`` s."""

    def __init__(self, *, console: Console | None = None, refresh: float = 0.2) -> None:
        self.console, self.refresh = console, refresh
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None
        self._last = 0.0

    def on_train_begin(self, state: TrainState) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        console = self.console or Console(file=sys.stderr)
        if not console.is_terminal:
            return
        self._bar = RichProgress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  {task.fields[val]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._task = self._bar.add_task(
            "train",
            total=state.epochs * state.steps_per_epoch,
            completed=state.step,
            epoch=f"{state.epoch + 1}/{state.epochs}",
            loss="-",
            val="",
        )
        self._bar.start()

    def on_batch_end(self, step: int, logs: Logs) -> None:
        if self._bar is None or self._task is None:
            return
        now = time.perf_counter()
        if now - self._last >= self.refresh:
            self._last = now
            loss = float(logs["loss"])
            if self.state.target_scale is not None:  # regression: RMSE in the target's units
                loss = math.sqrt(max(loss, 0.0)) * self.state.target_scale
            self._bar.update(self._task, completed=step, loss=format_metric("loss", loss))

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        if self._bar is None or self._task is None:
            return
        values = epoch_values(logs)
        self._bar.update(
            self._task,
            completed=self.state.step,
            loss=format_metric(*values[0]),
            val="  ".join(f"{k} {format_metric(k, v)}" for k, v in values[1:]),
            epoch=f"{min(epoch + 1, self.state.epochs)}/{self.state.epochs}",
        )

    def on_train_end(self, state: TrainState) -> None:
        if self._bar is not None and self._task is not None:
            if state.stop_reason is not None:  # the bar stops short of the last epoch: say why
                self._bar.update(self._task, epoch=f"{state.epoch}/{state.epochs} (stopped)")
            self._bar.stop()
            self._bar = None
