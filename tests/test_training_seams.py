"""The training loop's seams: the objective (the loss over a batch) and the strategy
(placement, autocast, backward, step) can be replaced from outside the package."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from dataflywheel.config import TrainConfig
from dataflywheel.models.registry import build_model, model_spec
from dataflywheel.tasks import get_task
from dataflywheel.train.loop import Batchable, fit
from dataflywheel.train.objective import Objective, make_objective, register_objective
from dataflywheel.train.strategy import SingleDevice

CFG = TrainConfig(epochs=3, batch_size=16, early_stopping=None, seed=0)


def data(n: int = 96, seed: int = 0) -> Batchable:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] + 0.1 * rng.normal(size=n)).astype(np.float32)
    return Batchable.of(torch.from_numpy(X), torch.zeros(n, 0, dtype=torch.long), torch.from_numpy(y))


def model() -> nn.Module:
    return build_model(model_spec("mlp", n_numeric=4, cardinalities=[], n_outputs=1, task="regression",
                                  hidden=[8]), seed=0)


def mse(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(logits.squeeze(-1), y)


def test_a_custom_objective_changes_the_loss_used() -> None:
    plain = fit(model(), data(), data(seed=1), CFG, "regression", progress=False)
    tripled = fit(model(), data(), data(seed=1), CFG, "regression", progress=False,
                  objective=Objective(lambda logits, y: 3.0 * mse(logits, y)))
    # Adam's steps do not depend on the loss's scale: same trajectory, three times the loss.
    for a, b in zip(plain.epochs, tripled.epochs, strict=True):
        assert b["loss"] == pytest.approx(3.0 * a["loss"], rel=1e-3)
        assert b["val_loss"] == pytest.approx(3.0 * a["val_loss"], rel=1e-3)

    seen: list[int] = []

    class Counting(Objective):
        def batch_loss(self, forward: Callable[..., torch.Tensor], data: Batchable,
                       idx: torch.Tensor) -> torch.Tensor:
            seen.append(len(idx))
            return super().batch_loss(forward, data, idx)

    fit(model(), data(), None, CFG.model_copy(update={"epochs": 1}), "regression", progress=False,
        objective=Counting(mse))
    assert seen == [16] * 6  # every batch, tabular ones included


def test_objectives_are_looked_up_by_the_tasks_loss_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_objective("mse", lambda reduction: Objective(mse))
    register_objective("halved_mse", lambda reduction: Objective(lambda logits, y: 0.5 * mse(logits, y)))
    plain = fit(model(), data(), None, CFG, "regression", progress=False)
    monkeypatch.setattr(get_task("regression"), "loss", "halved_mse")
    assert make_objective(CFG, "regression").loss(torch.ones(2, 1), torch.zeros(2)).item() == 0.5
    halved = fit(model(), data(), None, CFG, "regression", progress=False)
    assert halved.epochs[0]["loss"] == pytest.approx(0.5 * plain.epochs[0]["loss"], rel=1e-3)


def test_a_custom_strategy_runs_backward_and_step() -> None:
    calls = {"backward": 0, "step": 0}

    class Counting(SingleDevice):
        def backward(self, loss: torch.Tensor) -> None:
            calls["backward"] += 1
            super().backward(loss)

        def step(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], clip: float | None) -> None:
            calls["step"] += 1
            super().step(optimizer, params, clip)

    cfg = CFG.model_copy(update={"epochs": 1, "grad_accumulation": 2})
    history = fit(model(), data(), None, cfg, "regression", progress=False, strategy=Counting())
    assert calls == {"backward": 6, "step": 3} and history.device == "cpu"
