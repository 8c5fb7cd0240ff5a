"""Checkpoint files: safetensors + JSON, atomic replacement, exact round trips."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from dataflywheel.errors import ModelError
from dataflywheel.train.checkpoint import (
    POINTER,
    flatten,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    unflatten,
)


def _adam_after_steps() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.95))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 3)).pow(2).mean().backward()
        opt.step()
    return model, opt


def _assert_same(a: object, b: object) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b)
    else:
        assert a == b and type(a) is type(b)


def test_flatten_round_trips_nested_state() -> None:
    state = {
        "ints": {0: {"t": torch.arange(3)}, 7: None},
        "tuple": (0.9, 0.999),
        "list": [1, "two", torch.tensor(3.5, dtype=torch.float64), True],
        "inf": math.inf,
        "rng": torch.get_rng_state(),
    }
    tensors: dict[str, torch.Tensor] = {}
    doc = json.loads(json.dumps(flatten(state, tensors)))
    assert all(isinstance(t, torch.Tensor) for t in tensors.values()) and len(tensors) == 3
    _assert_same(state, unflatten(doc, tensors))


def test_flatten_refuses_arbitrary_objects() -> None:
    with pytest.raises(TypeError, match="cannot checkpoint"):
        flatten({"fn": object()}, {})


def test_save_and_load_optimizer_state_exactly(tmp_path: Path) -> None:
    model, opt = _adam_after_steps()
    folder = save_checkpoint(
        tmp_path, model.state_dict(), {"epoch": 3, "optimizer": opt.state_dict()}
    )
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.safetensors",
        "state.json",
        "state.safetensors",
    ]
    assert load_file(str(folder / "model.safetensors")).keys() == model.state_dict().keys()
    json.loads((folder / "state.json").read_text())

    weights, state = load_checkpoint(tmp_path)  # type: ignore[misc]
    _assert_same(model.state_dict(), {k: weights[k] for k in model.state_dict()})
    fresh = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    fresh.load_state_dict(weights)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.5)
    fresh_opt.load_state_dict(state["optimizer"])
    _assert_same(opt.state_dict(), fresh_opt.state_dict())
    assert state["epoch"] == 3


def test_latest_pointer_and_pruning(tmp_path: Path) -> None:
    model, _ = _adam_after_steps()
    folders = [
        save_checkpoint(tmp_path, model.state_dict(), {"epoch": e}, keep=2) for e in (1, 2, 3)
    ]
    assert latest_checkpoint(tmp_path) == folders[-1]
    kept = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert kept == sorted(f.name for f in folders[1:])
    assert not list(tmp_path.glob(".*tmp*"))
    _, state = load_checkpoint(tmp_path)  # type: ignore[misc]
    assert state["epoch"] == 3


def test_shared_tensors_are_saved(tmp_path: Path) -> None:
    emb = nn.Embedding(5, 3)
    head = nn.Linear(3, 5, bias=False)
    head.weight = emb.weight  # tied, as in language models
    model = nn.ModuleDict({"emb": emb, "head": head})
    save_checkpoint(tmp_path, model.state_dict(), {"epoch": 1})
    weights, _ = load_checkpoint(tmp_path)  # type: ignore[misc]
    assert torch.equal(weights["emb.weight"], weights["head.weight"])


def test_no_checkpoint_is_none_and_broken_ones_are_model_errors(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "absent") is None
    (tmp_path / POINTER).write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        load_checkpoint(tmp_path)
    (tmp_path / POINTER).write_text(json.dumps({"latest": "epoch-0009-gone"}))
    with pytest.raises(ModelError, match="missing checkpoint"):
        load_checkpoint(tmp_path)


def test_truncated_tensor_file_is_a_model_error(tmp_path: Path) -> None:
    model, _ = _adam_after_steps()
    folder = save_checkpoint(tmp_path, model.state_dict(), {"epoch": 1})
    blob = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ModelError) as exc:
        load_checkpoint(tmp_path)
    assert exc.value.where == str(folder)
