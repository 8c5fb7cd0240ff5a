"""The training strategy: where a model trains and how one optimiser step runs.

The loop asks a :class:`Strategy` to place the model (and so its data), for the autocast
context of a forward pass, to run the backward pass and to step the optimiser. Today's
behaviour is :class:`SingleDevice`: one CPU or CUDA device (``train.device``), bf16 autocast
where the device runs it natively (``train.bf16``), gradient-norm clipping
(``train.grad_clip``). A distributed strategy (rank-aware batching, all-reduce of the
gradients) implements the same four methods; ``fit(..., strategy=...)`` takes one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import nn

from dataflywheel.runtime import bf16_supported, resolve_device

if TYPE_CHECKING:
    from dataflywheel.config import TrainConfig


@runtime_checkable
class Strategy(Protocol):
    def place(self, model: nn.Module, cfg: TrainConfig) -> torch.device:
        """Move ``model`` where it trains and return that device (the data follows it)."""
        ...

    def autocast(self) -> AbstractContextManager[None] | None:
        """The context a forward pass runs in, or None for full precision without one."""
        ...

    def backward(self, loss: torch.Tensor) -> None:
        """Add the gradients of ``loss`` to the parameters'."""
        ...

    def step(self, optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter], clip: float | None) -> None:
        """One optimiser step on the summed gradients (their norm clipped to ``clip`` first)."""
        ...


class SingleDevice:
    """One device: ``train.device`` (auto: a CUDA GPU for large models), ``train.bf16`` where
    ``supports_bf16(device)`` says the device runs it natively."""

    def __init__(self, supports_bf16: Callable[[torch.device], bool] = bf16_supported) -> None:
        self.supports_bf16 = supports_bf16
        self.device = torch.device("cpu")
        self.bf16 = False

    def place(self, model: nn.Module, cfg: TrainConfig) -> torch.device:
        n_params = sum(p.numel() for p in model.parameters())
        self.device = resolve_device(cfg.device, n_params=n_params)
        model.to(self.device)
        self.bf16 = cfg.bf16 and self.supports_bf16(self.device)
        if cfg.bf16 and not self.bf16:
            warnings.warn(f"train.bf16: this {self.device.type} has no native bfloat16; training in float32",
                          stacklevel=3)
        return self.device

    def autocast(self) -> AbstractContextManager[None] | None:
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else None

    def backward(self, loss: torch.Tensor) -> None:
        torch.autograd.backward(loss)  # loss.backward(), whose signature torch leaves unannotated

    def step(self, optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter], clip: float | None) -> None:
        if clip is not None:
            nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
