"""Callback hooks, stop requests, EarlyStopping, Checkpoint and Progress."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from dataflywheel.config import TrainConfig
from dataflywheel.errors import ConfigError
from dataflywheel.models.registry import build_model, model_spec
from dataflywheel.train.callbacks import Callback, Checkpoint, EarlyStopping, Progress, TrainState
from dataflywheel.train.loop import Batchable, fit


def _data(n: int = 50, seed: int = 0) -> Batchable:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    return Batchable.of(
        torch.from_numpy(X),
        torch.zeros(n, 0, dtype=torch.long),
        torch.from_numpy((X[:, 0] > 0).astype(np.float32)),
    )


def _model() -> torch.nn.Module:
    return build_model(
        model_spec("mlp", n_numeric=3, cardinalities=[], n_outputs=1, task="binary", hidden=[8]),
        seed=0,
    )


CFG = TrainConfig(epochs=3, batch_size=16, early_stopping=None)  # 50 rows -> 4 steps per epoch


class Recorder(Callback):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_train_begin(self, state: TrainState) -> None:
        self.calls.append(("train_begin", state.epoch))

    def on_epoch_begin(self, epoch: int) -> None:
        self.calls.append(("epoch_begin", epoch))

    def on_batch_end(self, step: int, logs: dict) -> None:
        assert isinstance(logs["loss"], torch.Tensor) and logs["loss"].ndim == 0
        self.calls.append(("batch_end", step))

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        assert self.state.epoch == epoch and self.state.history[-1] is logs
        self.calls.append(("epoch_end", epoch))

    def on_train_end(self, state: TrainState) -> None:
        self.calls.append(("train_end", state.epoch))


def test_hooks_run_in_order() -> None:
    rec = Recorder()
    fit(_model(), _data(), _data(seed=1), CFG, "binary", callbacks=[rec], progress=False)
    expected: list[tuple] = [("train_begin", 0)]
    for epoch in (1, 2, 3):
        expected += [("epoch_begin", epoch)] + [
            ("batch_end", 4 * (epoch - 1) + s) for s in (1, 2, 3, 4)
        ]
        expected += [("epoch_end", epoch)]
    assert rec.calls == expected + [("train_end", 3)]


def test_base_callback_hooks_do_nothing() -> None:
    base, model = Callback(), _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = fit(model, _data(), None, CFG, "binary", callbacks=[base], progress=False)
    assert base.state.epoch == 3 and base.state_dict() == {} and len(history.epochs) == 3
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_callback_can_request_a_stop() -> None:
    class StopAtTwo(Callback):
        def on_epoch_end(self, epoch: int, logs: dict) -> None:
            self.state.stop = epoch == 2

    history = fit(
        _model(),
        _data(),
        None,
        CFG.model_copy(update={"epochs": 10}),
        "binary",
        callbacks=[StopAtTwo()],
        progress=False,
    )
    assert [e["epoch"] for e in history.epochs] == [1, 2] and history.stopped_early


# -- EarlyStopping -------------------------------------------------------------------------------


def _drive(
    es: EarlyStopping, values: list[float], monitor: str = "val_loss"
) -> tuple[TrainState, list[int]]:
    """Feed ``values`` as one epoch each; the weight is set to the epoch number."""
    model = torch.nn.Linear(1, 1, bias=False)
    state = TrainState(
        model, torch.optim.SGD(model.parameters()), None, torch.Generator(), CFG, "binary", 100, 1
    )
    es.set_state(state)
    epochs = []
    for epoch, value in enumerate(values, start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        es.on_epoch_end(epoch, {monitor: value})
        epochs.append(epoch)
        if state.stop:
            break
    es.on_train_end(state)
    return state, epochs


def test_early_stopping_patience_and_restore() -> None:
    es = EarlyStopping(patience=2)
    state, epochs = _drive(es, [1.0, 0.8, 0.9, 0.85, 0.5])
    assert epochs == [1, 2, 3, 4] and state.stop
    assert es.best == 0.8 and es.best_epoch == 2 and state.best_epoch == 2
    assert state.model.weight.item() == 2.0  # weights of the best epoch


def test_early_stopping_min_delta_and_max_mode() -> None:
    es = EarlyStopping(patience=2, min_delta=0.1, restore_best_weights=False)
    _, epochs = _drive(es, [1.0, 0.95, 0.92, 0.5])
    assert epochs == [1, 2, 3] and es.best_epoch == 1  # gains under min_delta do not count

    es = EarlyStopping(monitor="val_auc", mode="max", patience=3)
    state, epochs = _drive(es, [0.6, 0.7, 0.65, 0.9, 0.8], monitor="val_auc")
    assert epochs == [1, 2, 3, 4, 5] and not state.stop and es.best == 0.9
    assert state.model.weight.item() == 4.0


def test_early_stopping_state_round_trips() -> None:
    es = EarlyStopping(patience=3)
    _drive(es, [1.0, 0.5, 0.7])
    other = EarlyStopping(patience=3)
    other.load_state_dict(es.state_dict())
    assert (other.best, other.best_epoch, other.wait) == (0.5, 2, 1)
    assert torch.equal(other.best_weights["weight"], es.best_weights["weight"])  # type: ignore[index]


def test_early_stopping_on_an_unlogged_metric_names_the_config() -> None:
    cfg = TrainConfig(epochs=3, batch_size=16, early_stopping={"metric": "val_auc", "mode": "max"})
    with pytest.raises(ConfigError) as exc:
        fit(_model(), _data(), _data(seed=1), cfg, "binary", progress=False)
    assert exc.value.where == "train.early_stopping.metric" and "val_loss" in str(exc.value)


# -- Checkpoint ----------------------------------------------------------------------------------


def test_checkpoint_writes_every_epoch(tmp_path: Path) -> None:
    written: list[int] = []

    class Watch(Callback):
        def on_epoch_end(self, epoch: int, logs: dict) -> None:
            pointer = tmp_path / "latest.json"
            written.append(json.loads(pointer.read_text())["latest"] if pointer.exists() else None)

    ckpt = Checkpoint(tmp_path, keep=2)
    # Watch runs before the checkpoint (fit puts checkpoints last), so it sees the previous one
    fit(_model(), _data(), None, CFG, "binary", callbacks=[ckpt, Watch()], progress=False)
    assert written[0] is None and [w[:10] for w in written[1:]] == ["epoch-0001", "epoch-0002"]
    assert ckpt.last is not None and ckpt.last.name.startswith("epoch-0003")
    dirs = sorted(p.name[:10] for p in tmp_path.iterdir() if p.is_dir())
    assert dirs == ["epoch-0002", "epoch-0003"]
    files = {p.suffix for p in tmp_path.rglob("*") if p.is_file()}
    assert files == {".json", ".safetensors"}


# -- Progress ------------------------------------------------------------------------------------


def test_progress_draws_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    fit(
        _model(),
        _data(),
        _data(seed=1),
        CFG,
        "binary",
        callbacks=[Progress(console=console, refresh=0)],
        progress=False,
    )
    text = out.getvalue()
    assert "epoch" in text and "loss" in text and "val_loss" in text and "12/12" in text


def test_progress_is_silent_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    fit(
        _model(),
        _data(),
        None,
        CFG,
        "binary",
        callbacks=[Progress(console=Console(file=out, force_terminal=False))],
    )
    fit(_model(), _data(), None, CFG, "binary", progress=True)  # stderr is not a TTY under pytest
    assert out.getvalue() == "" and capsys.readouterr().err == ""


# -- what training says about itself: early stopping, per-epoch lines, target units ---------------


def _noise(n: int, seed: int) -> Batchable:
    """Labels independent of the inputs: the validation loss stops improving within a few epochs."""
    rng = np.random.default_rng(seed)
    return Batchable.of(torch.from_numpy(rng.normal(size=(n, 3)).astype(np.float32)),
                        torch.zeros(n, 0, dtype=torch.long), torch.from_numpy(rng.integers(0, 2, n).astype(np.float32)))


def test_early_stopping_says_why_and_which_epoch_was_kept() -> None:
    cfg = TrainConfig(epochs=60, batch_size=16, lr=0.05, early_stopping={"patience": 3})
    model = _model()
    history = fit(model, _noise(64, 0), _noise(64, 1), cfg, "binary", progress=False)
    assert history.stopped_early and len(history.epochs) < 60
    best = min(history.epochs, key=lambda e: e["val_loss"])
    assert history.kept_epoch == best["epoch"] == history.best_epoch
    assert history.stop_reason == (f"early stopping: val_loss did not improve for 3 epochs "
                                   f"(best {best['val_loss']:.6g} at epoch {best['epoch']})")
    last = history.epochs[-1]["epoch"]
    assert history.summary() == (f"training stopped after epoch {last} of 60: {history.stop_reason}; "
                                 f"kept the weights of epoch {best['epoch']} (the best)")

    full = fit(_model(), _data(), None, CFG, "binary", progress=False)
    assert full.stop_reason is None
    assert full.summary() == "trained 3 of 3 epochs; kept the weights of epoch 3 (the last)"
    steps = fit(_model(), _data(), None, TrainConfig(epochs=3, batch_size=16, max_steps=5, early_stopping=None),
                "binary", progress=False)
    assert steps.summary().startswith(
        "training stopped after epoch 2 of 3: reached train.max_steps (5 optimiser steps)")


def test_off_a_terminal_each_epoch_is_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    lines: list[str] = []
    accuracy = {"accuracy": lambda y, p: float(np.mean((p >= 0.5) == y))}
    fit(_model(), _data(), _data(seed=1), CFG, "binary", metrics=accuracy, progress=True,
        log=lines.append)  # stdout is not a TTY under pytest
    assert [line.split(":")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all(" loss " in line and "val_accuracy " in line and "val_loss " in line and line.endswith(" s)")
               for line in lines)
    fit(_model(), _data(), None, CFG, "binary", progress=False, log=lines.append)
    assert len(lines) == 3  # --no-progress: no epoch lines


def test_the_bar_says_training_stopped() -> None:
    out = io.StringIO()
    cfg = TrainConfig(epochs=60, batch_size=16, lr=0.05, early_stopping={"patience": 3})
    fit(_model(), _noise(64, 0), _noise(64, 1), cfg, "binary",
        callbacks=[Progress(console=Console(file=out, force_terminal=True, width=120), refresh=0)], progress=False)
    assert "(stopped)" in out.getvalue()


def test_regression_progress_is_in_the_target_units() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3)).astype(np.float32)
    y = (X[:, 0] + 0.1 * rng.normal(size=64)).astype(np.float32)  # standardised targets
    data = Batchable.of(torch.from_numpy(X), torch.zeros(64, 0, dtype=torch.long), torch.from_numpy(y))
    model = build_model(model_spec("mlp", n_numeric=3, cardinalities=[], n_outputs=1, task="regression",
                                   hidden=[8]), seed=0)
    lines: list[str] = []
    r2 = {"r2": lambda y, p: float(1 - np.mean((y - p) ** 2) / np.var(y))}
    history = fit(model, data, data, CFG, "regression", metrics=r2, progress=True, log=lines.append,
                  target_scale=250_000.0)
    for epoch in history.epochs:
        assert epoch["rmse"] == pytest.approx(np.sqrt(epoch["loss"]) * 250_000.0)
        assert epoch["val_rmse"] == pytest.approx(np.sqrt(epoch["val_loss"]) * 250_000.0)
    first = history.epochs[0]
    assert lines[0].startswith(f"epoch 1/3: rmse {first['rmse']:.6g}, val_rmse {first['val_rmse']:.6g}, val_r2")
    assert "loss" not in lines[0]


def test_cli_numbers_are_rounded_to_six_significant_digits() -> None:
    from dataflywheel.evaluate.metrics import format_metric, round_significant

    got = round_significant(np.array([751967.3398991233, 0.94387712, -1.23456789e-7, 0.0, np.nan, 12.5]))
    np.testing.assert_array_equal(got[[0, 1, 2, 3, 5]], [751967.0, 0.943877, -1.23457e-7, 0.0, 12.5])
    assert np.isnan(got[4])
    assert format_metric("rmse", 52123.456789) == "52123.5" and format_metric("val_loss", 0.693147181) == "0.693147"
    assert format_metric("accuracy", 0.9) == "0.9000" and format_metric("r2", None) == "-"


def test_flywheel_run_piped_prints_epochs_in_target_units_and_why_it_stopped(tmp_path: Path) -> None:
    import polars as pl

    from cli_helpers import flywheel

    rng = np.random.default_rng(0)
    area = rng.uniform(40, 200, 400)
    price = 2500.0 * area + rng.normal(0, 20_000, 400)  # prices around 250,000
    pl.DataFrame({"area": area, "rooms": rng.integers(1, 6, 400), "price": price}).write_csv(tmp_path / "houses.csv")
    (tmp_path / "flywheel.yaml").write_text(
        "data: {source: houses.csv, target: price}\n"
        "model: {type: mlp, params: {hidden: [8]}}\n"
        "train: {epochs: 40, batch_size: 32, lr: 0.05, seed: 0, threads: 1, early_stopping: {patience: 2}}\n")
    r = flywheel("run", cwd=tmp_path)  # stdout is a pipe here
    assert r.code == 0, r.err
    epochs = [line for line in r.out.splitlines() if line.startswith("epoch ")]
    assert epochs and epochs[0].startswith("epoch 1/40: rmse ")
    assert all(float(line.split("rmse ")[1].split(",")[0]) > 1000 for line in epochs)  # target units, not z-scores
    summary = next(line for line in r.out.splitlines() if line.startswith(("training stopped", "trained ")))
    assert "kept the weights of epoch" in summary
    if len(epochs) < 40:
        assert summary.startswith(f"training stopped after epoch {len(epochs)} of 40: early stopping: val_loss")

    pl.DataFrame({"area": [123.456789], "rooms": [3]}).write_csv(tmp_path / "new.csv")
    predicted = flywheel("predict", "new.csv", cwd=tmp_path)
    assert predicted.code == 0, predicted.err
    value = predicted.out.splitlines()[1]
    assert len(value.replace("-", "").replace(".", "").rstrip("0").lstrip("0")) <= 6, value
