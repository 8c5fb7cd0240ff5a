"""The transformer model and the loop features text models need: padding, bucketing,
gradient accumulation, max_steps, step-wise evaluation, bf16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataflywheel.config import TrainConfig
from dataflywheel.features.ragged import Ragged
from dataflywheel.models.registry import build_model, model_spec, takes_text
from dataflywheel.train import loop
from dataflywheel.train.batching import batch_order
from dataflywheel.train.callbacks import Callback

TINY = {"n_layer": 2, "n_head": 4, "d_model": 32, "text_vocab_size": 40, "max_length": 24}


def tiny(dropout: float = 0.0, n_outputs: int = 3, seed: int = 0, **shape: object) -> torch.nn.Module:
    args = {"n_numeric": 0, "cardinalities": [], "n_outputs": n_outputs, "task": "multiclass", **shape}
    return build_model(model_spec("transformer", **args, **TINY, dropout=dropout), seed=seed)


def text_data(n: int = 48, seed: int = 0) -> loop.Batchable:
    """Class k texts use token ids from band k, so the task is learnable."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    seqs = [[2, *(5 + 10 * k + rng.integers(0, 10, rng.integers(1, 20))).tolist(), 3] for k in y]
    return loop.Batchable.of(torch.zeros(n, 0), torch.zeros(n, 0, dtype=torch.long), torch.as_tensor(y),
                          Ragged.from_lists(seqs))


def test_transformer_is_registered_as_a_text_model() -> None:
    assert takes_text("transformer") and not takes_text("mlp")


def test_shapes_masking_invariance_and_gradients() -> None:
    model = tiny(n_numeric=2, cardinalities=[4]).eval()
    tokens = torch.randint(1, 40, (5, 11))
    mask = torch.arange(11)[None, :] < torch.tensor([[11], [3], [7], [1], [5]])
    num, cat = torch.randn(5, 2), torch.randint(0, 4, (5, 1))
    out = model({"numeric": num, "categorical": cat, "tokens": tokens, "attention_mask": mask})
    assert out.shape == (5, 3)
    for i, n in enumerate([11, 3, 7, 1, 5]):  # alone and unpadded == padded in the batch
        alone = model({"numeric": num[i : i + 1], "categorical": cat[i : i + 1], "tokens": tokens[i : i + 1, :n]})
        torch.testing.assert_close(alone, out[i : i + 1], atol=1e-5, rtol=1e-5)
    garbage = torch.where(mask, tokens, torch.randint(1, 40, tokens.shape))
    torch.testing.assert_close(model({"numeric": num, "categorical": cat, "tokens": garbage, "attention_mask": mask}),
                               out)
    model.train()
    model({"numeric": num, "categorical": cat, "tokens": tokens, "attention_mask": mask}).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if n != "tok_emb.weight")
    assert model.tok_emb.weight.grad[tokens[mask].unique()].abs().sum() > 0


def test_bucketed_batches_are_deterministic_cover_all_rows_and_pad_less() -> None:
    lengths = torch.randint(1, 200, (1000,), generator=torch.Generator().manual_seed(0))
    a = batch_order(1000, 16, torch.Generator().manual_seed(5), lengths, bucket_batches=10)
    b = batch_order(1000, 16, torch.Generator().manual_seed(5), lengths, bucket_batches=10)
    c = batch_order(1000, 16, torch.Generator().manual_seed(6), lengths, bucket_batches=10)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=False))
    assert sorted(torch.cat(a).tolist()) == list(range(1000))

    def padded(batches: list[torch.Tensor]) -> int:
        return sum(int(lengths[i].max()) * len(i) for i in batches)

    plain = batch_order(1000, 16, torch.Generator().manual_seed(5))
    assert padded(a) < 0.7 * padded(plain)


def test_collate_pads_each_batch_to_its_longest() -> None:
    data = text_data(8)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def model(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seen.append((batch["tokens"], batch["attention_mask"]))
        return torch.zeros(len(batch["tokens"]), 3)

    idx = torch.tensor([3, 0, 5])
    data.forward(model, idx)
    tokens, mask = seen[0]
    lengths = data.inputs["tokens"].lengths[idx.numpy()]
    assert tokens.shape == (3, lengths.max()) and mask.sum(1).tolist() == lengths.tolist()
    first = torch.from_numpy(data.inputs["tokens"].row(3))
    assert (tokens[~mask] == 0).all() and torch.equal(tokens[0, : lengths[0]], first)


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("text", [False, True])
def test_accumulated_micro_batches_equal_one_large_batch(text: bool) -> None:
    if text:
        data, make = text_data(64), lambda: tiny(seed=1)
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 5, generator=g)
        data = loop.Batchable.of(x, torch.zeros(64, 0, dtype=torch.long), (x[:, 0] > 0).long() + (x[:, 1] > 0).long())
        make = lambda: build_model(model_spec("mlp", n_numeric=5, cardinalities=[], n_outputs=3,  # noqa: E731
                                              task="multiclass"), seed=1)
    base = {"epochs": 2, "optimizer": "sgd", "lr": 0.5, "early_stopping": None, "bucket_by_length": False}
    big, small = make(), make()
    h1 = loop.fit(big, data, None, TrainConfig(batch_size=16, **base), "multiclass", progress=False)
    h2 = loop.fit(small, data, None, TrainConfig(batch_size=8, grad_accumulation=2, **base), "multiclass",
                  progress=False)
    for a, b in zip(_weights(big), _weights(small), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert h1.epochs[-1]["loss"] == pytest.approx(h2.epochs[-1]["loss"], rel=1e-4)
    moved = any(not torch.equal(a, b) for a, b in zip(_weights(big), _weights(make()), strict=True))
    assert moved


def test_max_steps_and_eval_every_steps() -> None:
    class Seen(Callback):
        steps: list[int] = []

        def on_batch_end(self, step: int, logs: dict) -> None:
            self.steps.append(step)

        def on_evaluate(self, step: int, logs: dict) -> None:
            self.evaluated = [*getattr(self, "evaluated", []), step]

    seen = Seen()
    cfg = TrainConfig(epochs=10, batch_size=8, max_steps=11, eval_every_steps=4, early_stopping=None)
    history = loop.fit(tiny(), text_data(48), text_data(16, seed=1), cfg, "multiclass",
                       metrics={"n": lambda y, s: float(len(y))}, callbacks=[seen], progress=False)
    assert seen.steps == list(range(1, 12))  # 6 steps per epoch: stops mid-epoch 2
    assert history.reached_max_steps and not history.stopped_early and len(history.epochs) == 2
    assert [e["step"] for e in history.evals] == [4, 8] == seen.evaluated
    assert [e["epoch"] for e in history.evals] == [1, 2] and history.evals[0]["val_n"] == 16.0
    assert "val_loss" in history.epochs[-1]


def test_a_tiny_transformer_learns_and_bf16_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = TrainConfig(epochs=8, batch_size=16, lr=3e-3, early_stopping=None)
    model, valid = tiny(), text_data(60, seed=9)
    history = loop.fit(model, text_data(120), valid, cfg, "multiclass",
                       metrics={"accuracy": lambda y, s: float((s.argmax(1) == y).mean())}, progress=False)
    assert history.epochs[-1]["loss"] < 0.5 * history.epochs[0]["loss"]
    assert history.epochs[-1]["val_accuracy"] >= 0.9

    monkeypatch.setattr(loop, "bf16_supported", lambda device: True)
    dtypes: list[torch.dtype] = []
    model = tiny()
    model.head.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    loop.fit(model, text_data(32), None, TrainConfig(epochs=1, batch_size=16, bf16=True, early_stopping=None),
             "multiclass", progress=False)
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    monkeypatch.setattr(loop, "bf16_supported", lambda device: False)
    with pytest.warns(UserWarning, match="bfloat16"):
        loop.fit(tiny(), text_data(16), None, TrainConfig(epochs=1, bf16=True, early_stopping=None),
                 "multiclass", progress=False)
