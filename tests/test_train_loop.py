"""The one training loop: learning, determinism, schedules, clipping, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.metrics import roc_auc_score

from dataflywheel.config import ScheduleConfig, TrainConfig
from dataflywheel.errors import ConfigError, DataError
from dataflywheel.models.registry import build_model, model_spec
from dataflywheel.train.callbacks import Callback
from dataflywheel.train.loop import Batchable, fit
from dataflywheel.train.optim import lr_factor

NO_CAT = torch.zeros(0, 0, dtype=torch.long)


def _batch(X: np.ndarray, y: np.ndarray, task: str, cats: np.ndarray | None = None) -> Batchable:
    categorical = (
        torch.as_tensor(cats) if cats is not None else torch.zeros(len(X), 0, dtype=torch.long)
    )
    dtype = torch.long if task == "multiclass" else torch.float32
    return Batchable.of(
        torch.as_tensor(X, dtype=torch.float32), categorical, torch.as_tensor(y, dtype=dtype)
    )


def _split(X: np.ndarray, y: np.ndarray, task: str, seed: int = 0) -> tuple[Batchable, Batchable]:
    idx = np.random.default_rng(seed).permutation(len(X))
    X = (X - X.mean(0)) / X.std(0)
    if task == "regression":
        y = (y - y.mean()) / y.std()
    cut = int(0.75 * len(X))
    return _batch(X[idx[:cut]], y[idx[:cut]], task), _batch(X[idx[cut:]], y[idx[cut:]], task)


def _toy(n: int = 120, d: int = 5, seed: int = 0) -> tuple[Batchable, Batchable]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    cats = rng.integers(0, 4, size=(n, 2))
    y = ((X[:, 0] + (cats[:, 0] == 1) + 0.3 * rng.normal(size=n)) > 0.5).astype(np.float32)
    cut = int(0.75 * n)
    return _batch(X[:cut], y[:cut], "binary", cats[:cut]), _batch(
        X[cut:], y[cut:], "binary", cats[cut:]
    )


def _model(
    task: str,
    n_numeric: int,
    n_outputs: int = 1,
    *,
    seed: int = 0,
    cards: list[int] | None = None,
    **params,
):
    spec = model_spec(
        "mlp",
        n_numeric=n_numeric,
        cardinalities=cards or [],
        n_outputs=n_outputs,
        task=task,
        **params,
    )
    return build_model(spec, seed=seed)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_learns_breast_cancer() -> None:
    train, valid = _split(*load_breast_cancer(return_X_y=True), "binary")
    model = _model("binary", 30)
    cfg = TrainConfig(epochs=8, lr=3e-3, early_stopping=None)
    history = fit(
        model, train, valid, cfg, "binary", metrics={"roc_auc": roc_auc_score}, progress=False
    )
    assert len(history.epochs) == 8
    assert history.epochs[-1]["loss"] < 0.5 * history.epochs[0]["loss"]
    assert history.epochs[-1]["val_roc_auc"] > 0.97
    assert set(history.epochs[0]) == {"epoch", "loss", "lr", "val_loss", "val_roc_auc", "seconds"}
    assert history.threads == torch.get_num_threads() == 1
    assert history.resumed_from is None and not history.stopped_early
    assert history.best_epoch == min(history.epochs, key=lambda e: e["val_loss"])["epoch"]


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_multiclass_with_each_optimizer(optimizer: str) -> None:
    train, valid = _split(*load_iris(return_X_y=True), "multiclass")
    model = _model("multiclass", 4, 3, hidden=[16])
    cfg = TrainConfig(
        epochs=15,
        lr=0.05 if optimizer == "sgd" else 0.01,
        momentum=0.9 if optimizer == "sgd" else 0.0,
        optimizer=optimizer,
        weight_decay=1e-4,
        early_stopping=None,
    )
    accuracy = lambda y, p: float((p.argmax(1) == y).mean())
    history = fit(model, train, valid, cfg, "multiclass", metrics={"acc": accuracy}, progress=False)
    assert history.epochs[-1]["loss"] < 0.5 * history.epochs[0]["loss"]
    assert history.epochs[-1]["val_acc"] > 0.8


def test_regression_reduces_mse() -> None:
    train, valid = _split(*load_diabetes(return_X_y=True), "regression")
    history = fit(
        _model("regression", 10, hidden=[32]),
        train,
        valid,
        TrainConfig(epochs=10, lr=3e-3, early_stopping=None),
        "regression",
        progress=False,
    )
    assert history.epochs[-1]["val_loss"] < 0.7  # target standardised: predicting the mean gives ~1


def test_same_seed_same_weights_and_metrics() -> None:
    train, valid = _toy()

    def run(seed: int) -> tuple[dict, list]:
        model = _model("binary", 5, cards=[4, 4], dropout=0.3, hidden=[16])
        cfg = TrainConfig(epochs=3, batch_size=16, seed=seed, early_stopping=None)
        history = fit(model, train, valid, cfg, "binary", progress=False)
        return _weights(model), [(e["loss"], e["val_loss"]) for e in history.epochs]

    (w1, h1), (w2, h2), (w3, h3) = run(0), run(0), run(1)
    assert _same_weights(w1, w2) and h1 == h2
    assert not _same_weights(w1, w3) and h1 != h3


def test_warmup_and_decay_schedules() -> None:
    for decay, last in [("constant", 1.0), ("linear", 0.0), ("cosine", 0.0)]:
        f = lr_factor(ScheduleConfig(warmup_steps=4, decay=decay), total_steps=14)
        assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
        assert f(4) == 1.0 and f(14) == pytest.approx(last)
        assert all(f(s) >= f(s + 1) for s in range(4, 14))
    assert lr_factor(ScheduleConfig(decay="cosine"), 10)(5) == pytest.approx(0.5)

    train, _ = _toy(n=64)  # 48 rows -> 3 steps per epoch
    cfg = TrainConfig(
        epochs=4,
        batch_size=16,
        lr=0.1,
        schedule={"warmup_steps": 2, "decay": "linear"},
        early_stopping=None,
    )
    history = fit(_model("binary", 5, cards=[4, 4]), train, None, cfg, "binary", progress=False)
    f = lr_factor(cfg.schedule, 12)
    assert [e["lr"] for e in history.epochs] == pytest.approx(
        [0.1 * f(3 * k + 2) for k in range(4)]
    )


def test_grad_clip_bounds_the_update() -> None:
    train, _ = _toy()
    for clip in (None, 1e-3):
        model = _model("binary", 5, cards=[4, 4], hidden=[])
        before = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
        cfg = TrainConfig(
            epochs=1, batch_size=1000, optimizer="sgd", lr=1.0, grad_clip=clip, early_stopping=None
        )
        fit(model, train, None, cfg, "binary", progress=False)
        moved = (torch.nn.utils.parameters_to_vector(model.parameters()) - before).norm().item()
        if clip is None:
            assert moved > 0.01
        else:
            assert moved == pytest.approx(clip, rel=1e-4)


def test_early_stopping_from_config_restores_best_weights() -> None:
    train, valid = _toy()
    seen: list[dict] = []

    class Snap(Callback):
        def on_epoch_end(self, epoch: int, logs: dict) -> None:
            seen.append(_weights(self.state.model))

    cfg = TrainConfig(epochs=200, lr=0.05, batch_size=8, early_stopping={"patience": 2})
    model = _model("binary", 5, cards=[4, 4], hidden=[64, 64])
    history = fit(model, train, valid, cfg, "binary", callbacks=[Snap()], progress=False)
    assert history.stopped_early and len(history.epochs) < 200
    assert len(history.epochs) == history.best_epoch + 2
    best = min(history.epochs, key=lambda e: e["val_loss"])
    assert history.best_epoch == best["epoch"]
    assert _same_weights(_weights(model), seen[history.best_epoch - 1])


def test_no_early_stopping_without_validation_data() -> None:
    train, _ = _toy()
    history = fit(
        _model("binary", 5, cards=[4, 4]),
        train,
        None,
        TrainConfig(epochs=3),
        "binary",
        progress=False,
    )
    assert len(history.epochs) == 3 and history.best_epoch is None
    assert "val_loss" not in history.epochs[0]


def test_loss_must_fit_the_task() -> None:
    train, _ = _toy()
    with pytest.raises(ConfigError) as exc:
        fit(
            _model("binary", 5, cards=[4, 4]),
            train,
            None,
            TrainConfig(loss="mse"),
            "binary",
            progress=False,
        )
    assert exc.value.where == "train.loss"


def test_empty_or_ragged_data_is_a_data_error() -> None:
    model = _model("binary", 2)
    empty = Batchable.of(torch.zeros(0, 2), torch.zeros(0, 0, dtype=torch.long), torch.zeros(0))
    with pytest.raises(DataError, match="empty"):
        fit(model, empty, None, TrainConfig(), "binary", progress=False)
    ragged = Batchable.of(torch.zeros(5, 2), torch.zeros(4, 0, dtype=torch.long), torch.zeros(5))
    with pytest.raises(DataError, match="rows"):
        fit(model, ragged, None, TrainConfig(), "binary", progress=False)


def test_explicit_threads_are_recorded() -> None:
    train, _ = _toy(n=32)
    history = fit(
        _model("binary", 5, cards=[4, 4]),
        train,
        None,
        TrainConfig(epochs=1, threads=2, early_stopping=None),
        "binary",
        progress=False,
    )
    try:
        assert history.threads == 2 == torch.get_num_threads()
    finally:
        torch.set_num_threads(1)


def test_training_device_is_resolved_and_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataflywheel import runtime

    train, _ = _toy(n=32)
    history = fit(_model("binary", 5, cards=[4, 4]), train, None,
                  TrainConfig(epochs=1, device="cpu", early_stopping=None), "binary", progress=False)
    assert history.device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"train.device: 'cuda' is not available: torch sees no CUDA device"):
        fit(_model("binary", 5, cards=[4, 4]), train, None, TrainConfig(epochs=1, device="cuda"), "binary",
            progress=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert runtime.resolve_device("auto") == torch.device("cuda", 0) == runtime.resolve_device("cuda")
    assert runtime.resolve_device("auto", n_params=10_000) == torch.device("cpu")  # small: faster on the CPU
    with pytest.raises(ConfigError, match=r"serve.device: must be auto, cpu, cuda or cuda:N \(got 'gpu'\)"):
        runtime.resolve_device("gpu", where="serve.device")
    assert runtime.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"'cuda:2' is not available: torch sees 2 CUDA device\(s\)"):
        runtime.resolve_device("cuda:2")


# -- resume ------------------------------------------------------------------------------------


def _resume_model() -> torch.nn.Module:
    return _model("binary", 5, cards=[4, 4], hidden=[16], dropout=0.2, seed=4)


def test_three_epochs_then_resume_to_six_equals_six_in_one_go(tmp_path: Path) -> None:
    train, valid = _toy()
    cfg = TrainConfig(epochs=6, batch_size=16, early_stopping={"patience": 50})

    once = _resume_model()
    h_once = fit(
        once, train, valid, cfg, "binary", checkpoint_dir=tmp_path / "once", progress=False
    )

    first = fit(
        _resume_model(),
        train,
        valid,
        cfg.model_copy(update={"epochs": 3}),
        "binary",
        checkpoint_dir=tmp_path / "twice",
        progress=False,
    )
    assert len(first.epochs) == 3
    resumed = _resume_model()
    h6 = fit(
        resumed,
        train,
        valid,
        cfg,
        "binary",
        checkpoint_dir=tmp_path / "twice",
        resume=True,
        progress=False,
    )
    assert h6.resumed_from == 3 and len(h6.epochs) == 6
    # the epoch-6 weights (checkpointed before early stopping restores the best ones) ...
    assert _same_weights(_last_weights(tmp_path / "once")[1], _last_weights(tmp_path / "twice")[1])
    # ... and the best weights both runs end with
    assert _same_weights(_weights(once), _weights(resumed))
    assert [e["loss"] for e in h6.epochs] == [e["loss"] for e in h_once.epochs]
    assert h6.best_epoch == h_once.best_epoch


def _last_weights(directory: Path) -> tuple[dict, dict]:
    from dataflywheel.train.checkpoint import load_checkpoint

    weights, state = load_checkpoint(directory)  # type: ignore[misc]
    return state, weights


def test_interrupted_run_resumes_exactly_with_schedule_and_early_stopping(tmp_path: Path) -> None:
    train, valid = _toy(n=40)  # tiny and a high LR: validation loss peaks before the crash
    cfg = TrainConfig(
        epochs=6,
        batch_size=4,
        lr=0.05,
        schedule={"warmup_steps": 3, "decay": "cosine"},
        early_stopping={"patience": 50},
        optimizer="adamw",
        weight_decay=0.01,
    )

    class Crash(Callback):
        def on_epoch_begin(self, epoch: int) -> None:
            if epoch == 4:
                raise KeyboardInterrupt

    once = _resume_model()
    h_once = fit(once, train, valid, cfg, "binary", checkpoint_dir=tmp_path / "a", progress=False)

    with pytest.raises(KeyboardInterrupt):
        fit(
            _resume_model(),
            train,
            valid,
            cfg,
            "binary",
            callbacks=[Crash()],
            checkpoint_dir=tmp_path / "b",
            progress=False,
        )
    resumed = _resume_model()
    h = fit(
        resumed,
        train,
        valid,
        cfg,
        "binary",
        checkpoint_dir=tmp_path / "b",
        resume=True,
        progress=False,
    )
    assert h.resumed_from == 3
    assert h_once.best_epoch is not None and h_once.best_epoch <= 3  # needs the resumed ES state
    assert h.best_epoch == h_once.best_epoch
    assert _same_weights(_weights(once), _weights(resumed))  # both restored to the same best epoch
    assert _same_weights(_last_weights(tmp_path / "a")[1], _last_weights(tmp_path / "b")[1])
    strip = lambda hist: [{k: v for k, v in e.items() if k != "seconds"} for e in hist.epochs]
    assert strip(h) == strip(h_once)


def test_resume_without_checkpoint_starts_afresh(tmp_path: Path) -> None:
    train, _ = _toy(n=40)
    cfg = TrainConfig(epochs=2, early_stopping=None)
    h = fit(
        _model("binary", 5, cards=[4, 4]),
        train,
        None,
        cfg,
        "binary",
        checkpoint_dir=tmp_path,
        resume=True,
        progress=False,
    )
    assert h.resumed_from is None and len(h.epochs) == 2
    again = fit(
        _model("binary", 5, cards=[4, 4]),
        train,
        None,
        cfg,
        "binary",
        checkpoint_dir=tmp_path,
        resume=True,
        progress=False,
    )
    assert again.resumed_from == 2 and len(again.epochs) == 2
