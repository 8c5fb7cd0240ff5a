"""The single-neuron model three ways: NumPy reference, torch autograd, finite differences;
one step of our training loop; and the worked example in docs/math.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dataflywheel.config import TrainConfig
from dataflywheel.models.registry import build_model, model_spec
from dataflywheel.reference import logistic as ref
from dataflywheel.train.loop import Batchable, fit

DOC = Path(__file__).resolve().parents[1] / "docs" / "math.md"


def _data(
    seed: int = 0, n: int = 40, d: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (rng.random(n) < 0.5).astype(np.float64)
    return X, y, rng.normal(size=d), float(rng.normal())


def _neuron(w: np.ndarray, b: float) -> torch.nn.Module:
    model = build_model(
        model_spec("mlp", n_numeric=len(w), cardinalities=[], n_outputs=1, task="binary", hidden=[])
    )
    model = model.double()
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(w).reshape(1, -1))
        model.head.bias.fill_(b)
    return model


def test_single_neuron_is_one_linear_layer() -> None:
    model = _neuron(np.zeros(3), 0.0)
    params = dict(model.named_parameters())
    assert set(params) == {"head.weight", "head.bias"}
    assert params["head.weight"].shape == (1, 3)


def test_reference_forward_and_loss_match_torch() -> None:
    X, y, w, b = _data()
    model = _neuron(w, b)
    empty = torch.zeros(len(X), 0, dtype=torch.long)
    logits = model({"numeric": torch.from_numpy(X), "categorical": empty}).squeeze(-1)
    np.testing.assert_allclose(
        torch.sigmoid(logits).detach().numpy(), ref.forward(X, w, b), rtol=1e-12
    )
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(y))
    assert loss.item() == pytest.approx(ref.bce(ref.forward(X, w, b), y), rel=1e-12)


def test_autograd_gradients_equal_reference_and_finite_differences() -> None:
    X, y, w, b = _data(seed=1)
    model = _neuron(w, b)
    empty = torch.zeros(len(X), 0, dtype=torch.long)
    logits = model({"numeric": torch.from_numpy(X), "categorical": empty}).squeeze(-1)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(y)).backward()
    dw_torch = model.head.weight.grad.numpy().ravel()
    db_torch = model.head.bias.grad.item()

    dw_ref, db_ref = ref.gradients(X, y, w, b)
    np.testing.assert_allclose(dw_torch, dw_ref, rtol=1e-10, atol=1e-12)
    assert db_torch == pytest.approx(db_ref, rel=1e-10)

    eps = 1e-6
    J = lambda w_, b_: ref.bce(ref.forward(X, w_, b_), y)
    dw_fd = np.array([(J(w + eps * e, b) - J(w - eps * e, b)) / (2 * eps) for e in np.eye(len(w))])
    db_fd = (J(w, b + eps) - J(w, b - eps)) / (2 * eps)
    np.testing.assert_allclose(dw_ref, dw_fd, rtol=1e-6, atol=1e-9)
    assert db_ref == pytest.approx(db_fd, rel=1e-6)


def test_one_step_of_fit_equals_reference_sgd_step() -> None:
    X, y, w, b = _data(seed=2, n=25, d=4)
    lr = 0.3
    model = _neuron(w, b)
    cfg = TrainConfig(epochs=1, batch_size=len(X), optimizer="sgd", lr=lr, early_stopping=None)
    data = Batchable.of(
        torch.from_numpy(X), torch.zeros(len(X), 0, dtype=torch.long), torch.from_numpy(y)
    )
    history = fit(model, data, None, cfg, "binary", progress=False)

    w_ref, b_ref = ref.sgd_step(X, y, w, b, lr)
    np.testing.assert_allclose(
        model.head.weight.detach().numpy().ravel(), w_ref, rtol=1e-12, atol=1e-14
    )
    assert model.head.bias.item() == pytest.approx(b_ref, rel=1e-12)
    assert history.epochs[0]["loss"] == pytest.approx(ref.bce(ref.forward(X, w, b), y), rel=1e-12)


# -- docs/math.md ---------------------------------------------------------------------------

LINE = re.compile(r"^(\w+) \(([\d, ]*)\) = (.+)$")


def _doc_values() -> dict[str, tuple[tuple[int, ...], object]]:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("```text", 1)[1].split("```", 1)[0]
    values: dict[str, tuple[tuple[int, ...], object]] = {}
    for line in block.splitlines():
        m = LINE.match(line.strip())
        if m:
            shape = tuple(int(s) for s in m.group(2).replace(" ", "").split(",") if s)
            values[m.group(1)] = (shape, json.loads(m.group(3)))
    return values


def test_math_doc_example_matches_reference() -> None:
    values = _doc_values()
    X, y, w = (np.array(values[k][1], dtype=np.float64) for k in ("X", "y", "w"))
    b, lr = float(values["b"][1]), float(values["lr"][1])  # type: ignore[arg-type]

    z = ref.forward(X, w, b)
    dw, db = ref.gradients(X, y, w, b)
    w_new, b_new = ref.sgd_step(X, y, w, b, lr)
    expected = {
        "a": X @ w + b,
        "z": z,
        "loss_terms": -(y * np.log(z) + (1 - y) * np.log(1 - z)),
        "J": ref.bce(z, y),
        "err": z - y,
        "dw": dw,
        "db": db,
        "w_new": w_new,
        "b_new": b_new,
    }
    assert set(values) == set(expected) | {"X", "y", "w", "b", "lr"}
    for name, want in expected.items():
        shape, printed = values[name]
        got = np.asarray(printed, dtype=np.float64)
        assert got.shape == np.shape(want) == shape, name
        np.testing.assert_allclose(got, want, atol=5e-7, rtol=0, err_msg=name)
    assert values["X"][0] == X.shape and values["w"][0] == w.shape


def test_math_doc_claims_hold() -> None:
    text = DOC.read_text(encoding="utf-8")
    values = _doc_values()
    X, y, w = (np.array(values[k][1], dtype=np.float64) for k in ("X", "y", "w"))
    b, lr = float(values["b"][1]), float(values["lr"][1])  # type: ignore[arg-type]

    # "row 1: 0.5*0.2 + (-1.0)*(-0.4) + 2.0*0.1 + 0.05 = 0.75"
    m = re.search(r"row 1: (.+) = ([-\d.]+)", text)
    assert m is not None
    terms = [t.strip() for t in m.group(1).split(" + ")]
    products = [tuple(float(p.strip("()")) for p in t.split("*")) for t in terms[:-1]]
    assert products == list(zip(X[0], w, strict=True)) and float(terms[-1]) == b
    assert float(m.group(2)) == pytest.approx(X[0] @ w + b)

    err = ref.forward(X, w, b) - y
    dw, _ = ref.gradients(X, y, w, b)
    assert err[0] < 0 < err[1]
    assert int(np.argmax(np.abs(dw))) == 2 and dw[2] < 0
    w_new, b_new = ref.sgd_step(X, y, w, b, lr)
    assert ref.bce(ref.forward(X, w_new, b_new), y) < ref.bce(ref.forward(X, w, b), y)
