"""Model registry, the mlp builder and prediction helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from dataflywheel.errors import ModelError
from dataflywheel.models import registry
from dataflywheel.models.registry import (
    available_models,
    build_model,
    get_builder,
    model_spec,
    predict_proba,
    register_model,
)

SHAPES = {
    "binary": {"n_numeric": 4, "cardinalities": [3, 5], "n_outputs": 1, "task": "binary"},
    "multiclass": {"n_numeric": 4, "cardinalities": [3], "n_outputs": 3, "task": "multiclass"},
    "regression": {"n_numeric": 4, "cardinalities": [], "n_outputs": 1, "task": "regression"},
    "generation": {"n_numeric": 4, "cardinalities": [], "n_outputs": 2, "task": "generation"},
}


def _inputs(shape: dict, n: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    numeric = torch.randn(n, shape["n_numeric"], generator=g)
    cats = [torch.randint(0, c, (n, 1), generator=g) for c in shape["cardinalities"]]
    categorical = torch.cat(cats, dim=1) if cats else torch.zeros(n, 0, dtype=torch.long)
    return numeric, categorical


# -- the contract every registered model passes ----------------------------------------------


@pytest.fixture(scope="module")
def needs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Arguments some builders need beyond the shapes: a (tiny, random) pretrained encoder and
    causal LM base."""
    from test_pretrained import save_tiny_bert

    from dataflywheel.models.pretrained import content_hash

    from llm_helpers import save_tiny_llama

    base = save_tiny_bert(tmp_path_factory.mktemp("base"), seed=0)
    llama = save_tiny_llama(tmp_path_factory.mktemp("llama"))
    # Both read the text alone (other columns are refused at build time).
    return {"pretrained": {"base": str(base), "base_hash": content_hash(base), "n_numeric": 0, "cardinalities": []},
            "causal_lm": {"base": str(llama), "base_hash": content_hash(llama), "n_numeric": 0, "cardinalities": []}}


@pytest.mark.parametrize("name", available_models())
@pytest.mark.parametrize("task", sorted(SHAPES))
def test_every_model_maps_inputs_to_logits(name: str, task: str, needs: dict[str, dict]) -> None:
    from dataflywheel.features.batch import model_reads

    shape = {**SHAPES[task], **needs.get(name, {})}
    text = {"text_vocab_size": 50, "max_length": 16} if registry.takes_text(name) else {}
    spec = json.loads(json.dumps(model_spec(name, **shape, **text)))  # what model.json stores
    try:
        model = build_model(spec, seed=3)
    except ModelError as err:  # a family that cannot learn the task (causal_lm: only generation) says so
        assert err.where == "model.task" and name == "causal_lm" and task != "generation"
        return
    numeric, categorical = _inputs(shape)
    if text:  # a text model also reads padded token ids and their mask (and a causal LM labels)
        tokens = torch.randint(0, 50, (7, 9), generator=torch.Generator().manual_seed(1))
        mask = torch.arange(9)[None, :] < torch.randint(2, 10, (7, 1), generator=torch.Generator().manual_seed(2))
        batch = {"numeric": numeric, "categorical": categorical, "tokens": tokens, "attention_mask": mask}
        if "labels" in model_reads(model):
            batch["labels"] = torch.where(mask & (torch.arange(9)[None, :] >= 1), tokens, -100)
        logits = model(batch)
    else:
        logits = model({"numeric": numeric, "categorical": categorical})
    assert logits.shape == (7, shape["n_outputs"])
    assert logits.dtype == torch.float32
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

    twin = build_model(spec, seed=3)
    for (k, a), (_, b) in zip(model.state_dict().items(), twin.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_builtin_models_are_registered() -> None:
    assert "mlp" in available_models()
    assert get_builder("mlp") is registry.build_mlp


def test_duplicate_registration_is_rejected() -> None:
    name = "test_tiny_linear"
    register_model(name, lambda **kw: nn.Linear(kw["n_numeric"], kw["n_outputs"]))
    try:
        assert name in available_models()
        with pytest.raises(ValueError, match="already registered"):
            register_model(name, lambda **kw: nn.Identity())
        with pytest.raises(ValueError, match="already registered"):
            register_model("mlp", registry.build_mlp)
    finally:
        registry._BUILDERS.pop(name)


def test_unknown_model_type_names_model_type() -> None:
    with pytest.raises(ModelError) as exc:
        build_model({"type": "nope", "args": SHAPES["binary"]})
    assert exc.value.where == "model.type" and "mlp" in str(exc.value)


def test_seeded_build_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(model_spec("mlp", **SHAPES["binary"]), seed=9)
    assert torch.equal(torch.rand(3), expected)


# -- mlp ---------------------------------------------------------------------------------------


def test_mlp_default_is_dense64_relu_dense64_relu_dense1() -> None:
    model = build_model(
        model_spec("mlp", n_numeric=30, cardinalities=[], n_outputs=1, task="binary")
    )
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(30, 64), (64, 64), (64, 1)]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 2
    assert sum(p.numel() for p in model.parameters()) == 30 * 64 + 64 + 64 * 64 + 64 + 64 + 1


def test_mlp_multiclass_head_and_empty_hidden() -> None:
    model = build_model(
        model_spec("mlp", n_numeric=4, cardinalities=[], n_outputs=3, task="multiclass", hidden=[])
    )
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 3)]


def test_mlp_embeds_each_categorical_column() -> None:
    shape = SHAPES["binary"]
    model = build_model(model_spec("mlp", **shape, embedding_dim=4, hidden=[16]))
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    assert [(t.num_embeddings, t.embedding_dim) for t in tables] == [(3, 4), (5, 4)]
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    assert first.in_features == 4 + 2 * 4
    numeric, categorical = _inputs(shape)
    other = categorical.clone()
    other[:, 1] = (other[:, 1] + 1) % 5
    assert not torch.allclose(model({"numeric": numeric, "categorical": categorical}),
                              model({"numeric": numeric, "categorical": other}))


@pytest.mark.parametrize(
    "activation,cls", [("relu", nn.ReLU), ("gelu", nn.GELU), ("tanh", nn.Tanh), ("silu", nn.SiLU)]
)
def test_mlp_activations(activation: str, cls: type) -> None:
    model = build_model(
        model_spec("mlp", **SHAPES["regression"], activation=activation, dropout=0.5)
    )
    assert sum(isinstance(m, cls) for m in model.modules()) == 2
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 2


@pytest.mark.parametrize(
    "params,where",
    [
        ({"hidden": [64, 0]}, "model.params.hidden"),
        ({"hidden": "64"}, "model.params.hidden"),
        ({"activation": "sigmoidish"}, "model.params.activation"),
        ({"dropout": 1.0}, "model.params.dropout"),
        ({"dropout": -0.1}, "model.params.dropout"),
        ({"embedding_dim": 0}, "model.params.embedding_dim"),
        ({"hiden": [8]}, "model.params.hiden"),
    ],
)
def test_mlp_bad_params_name_the_yaml_path(params: dict, where: str) -> None:
    with pytest.raises(ModelError) as exc:
        build_model(model_spec("mlp", **SHAPES["binary"], **params))
    assert exc.value.where == where


def test_mlp_rejects_outputs_that_do_not_fit_the_task() -> None:
    with pytest.raises(ModelError, match="n_outputs"):
        build_model(model_spec("mlp", n_numeric=3, cardinalities=[], n_outputs=2, task="binary"))
    with pytest.raises(ModelError, match="n_outputs"):
        build_model(
            model_spec("mlp", n_numeric=3, cardinalities=[], n_outputs=1, task="multiclass")
        )


# -- predict_proba -----------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_predict_proba_shapes_and_ranges(task: str) -> None:
    shape = SHAPES[task]
    model = build_model(model_spec("mlp", **shape, dropout=0.3), seed=0)
    numeric, categorical = _inputs(shape, n=11)
    model.train()
    out = predict_proba(model, {"numeric": numeric.numpy(), "categorical": categorical.numpy()}, task)
    assert model.training  # mode restored
    assert isinstance(out, np.ndarray)
    logits = model.eval()({"numeric": numeric, "categorical": categorical}).detach()
    if task == "binary":
        assert out.shape == (11,) and ((out > 0) & (out < 1)).all()
        np.testing.assert_allclose(out, torch.sigmoid(logits[:, 0]).numpy(), rtol=1e-6)
    elif task == "multiclass":
        assert out.shape == (11, 3)
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)
        assert (out.argmax(axis=1) == logits.argmax(dim=1).numpy()).all()
    else:
        assert out.shape == (11,)
        np.testing.assert_allclose(out, logits[:, 0].numpy(), rtol=1e-6)
    again = predict_proba(model.train(), {"numeric": numeric, "categorical": categorical}, task)
    np.testing.assert_array_equal(out, again)  # eval mode: dropout off
