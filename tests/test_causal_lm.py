"""The ``causal_lm`` model family: the completion's loss against Hugging Face's own, full and LoRA
fine-tuning, bundles (every weight, or adapters referencing the base by hash), generation from a
loaded bundle, gradient checkpointing. A tiny random Llama (``llm_helpers``) keeps each test to
seconds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch

from dataflywheel.errors import ConfigError, ModelError

from llm_helpers import eos_id, save_tiny_llama

PROMPTS = ["what is two plus two?", "what is the capital of france?", "hello world, how are you today?",
           "how is the weather in town?"] * 4
ANSWERS = ["four.", "paris.", "i am fine, thank you.", "sunny with a little rain."] * 4
MAX_LENGTH = 64


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def frame() -> pl.DataFrame:
    return pl.DataFrame({"prompt": PROMPTS, "completion": ANSWERS})


def build(base: Path, finetune: str = "lora", **extra: object):  # noqa: ANN201
    from dataflywheel.features.preprocessor import Preprocessor
    from dataflywheel.features.target import TargetEncoder
    from dataflywheel.models.base_model import content_hash
    from dataflywheel.models.registry import build_model, model_spec

    df = frame()
    params = {"tokenizer": str(base), "max_length": MAX_LENGTH, "encoder": "chat", "completion": "completion"}
    pre = Preprocessor([], text_features=[("prompt", params)]).fit(df)
    target = TargetEncoder("generation").fit(df["completion"])
    spec = model_spec("causal_lm", n_numeric=0, cardinalities=[], n_outputs=2, task="generation",
                      text_vocab_size=pre.text_encoder_.vocab_size_, max_length=MAX_LENGTH, base=str(base),
                      base_hash=content_hash(base), finetune=finetune, **extra)
    return df, pre, target, spec, build_model(spec, seed=0)


def batch_of(pre, df: pl.DataFrame):  # noqa: ANN001, ANN201
    from dataflywheel.features.batch import collate, to_tensors

    inputs = pre.transform(df).inputs
    tensors = to_tensors(inputs, ["tokens", "labels"], dtype=torch.float32, device=torch.device("cpu"))
    return collate(tensors, None, pad_id=pre.pad_ids_)


def train(base: Path, finetune: str, epochs: int = 3, *, checkpoint_dir: Path | None = None, resume: bool = False,
          **cfg: object):  # noqa: ANN201
    from dataflywheel.config import TrainConfig
    from dataflywheel.train.loop import fit
    from dataflywheel.train.stage import encode

    df, pre, target, spec, model = build(base, finetune)
    settings = {"epochs": epochs, "batch_size": 8, "optimizer": "adamw", "lr": 1e-2, "early_stopping": None,
                "threads": 1, **cfg}
    history = fit(model, encode(pre, target, df, "completion", "generation").batch, None, TrainConfig(**settings),
                  "generation", progress=False, checkpoint_dir=checkpoint_dir, resume=resume)
    return df, pre, target, spec, model, history


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_the_completion_loss_is_hugging_faces_own(base: Path, finetune: str) -> None:
    from transformers import AutoModelForCausalLM

    df, pre, _target, _spec, model = build(base, finetune)
    batch = batch_of(pre, df.head(6))
    model.eval()
    with torch.no_grad():
        out = model(batch)  # (B, 2): summed NLL, tokens
        reference = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32).eval()
        expected = reference(input_ids=batch["tokens"], attention_mask=batch["attention_mask"].long(),
                             labels=batch["labels"]).loss
    labelled = (batch["labels"][:, 1:] != -100).sum(dim=1)
    assert out.shape == (6, 2) and torch.equal(out[:, 1], labelled.float())
    assert float(out[:, 0].sum() / out[:, 1].sum()) == pytest.approx(float(expected), rel=1e-5)


def test_logits_in_chunks_give_the_same_loss_and_gradients(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataflywheel.models import causal_lm

    df, pre, _target, _spec, model = build(base, "full")
    batch = batch_of(pre, df.head(8))

    def loss_and_grad() -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        out = model(batch)
        loss = out[:, 0].sum() / out[:, 1].sum()
        loss.backward()
        head = model.hf.get_output_embeddings().weight
        return loss.detach(), head.grad.detach().clone()

    whole = loss_and_grad()
    monkeypatch.setattr(causal_lm, "LOGIT_CHUNK", 5)  # many chunks, each recomputed in the backward pass
    chunked = loss_and_grad()
    assert torch.allclose(whole[0], chunked[0], atol=1e-6) and torch.allclose(whole[1], chunked[1], atol=1e-6)


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_each_mode_trains_its_parameters_and_lowers_the_loss(base: Path, finetune: str) -> None:
    _df, _pre, _target, _spec, model = build(base, finetune)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    *_, trained, history = train(base, finetune, epochs=4)
    changed = {n for n, p in trained.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable
    if finetune == "lora":
        assert trainable and all("lora_" in n for n in trainable)
    losses = [e["loss"] for e in history.epochs]
    assert losses[-1] < losses[0]
    assert all(e["tokens"] > 0 and e["tokens_per_s"] > 0 and e["peak_memory_mb"] > 0 for e in history.epochs)


def write(folder: Path, model, pre, target, spec, df) -> Path:  # noqa: ANN001
    from dataflywheel.data.schema import infer_schema
    from dataflywheel.registry.bundle import ModelBundle, write_bundle

    schema = infer_schema(df, "completion", overrides={"prompt": "text", "completion": "text"})
    write_bundle(folder, ModelBundle(model=model, task="generation", preprocessor=pre, target=target, schema=schema,
                                     spec=spec, target_column="completion"), metrics={}, lineage={})
    return folder


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_a_bundle_reloads_to_the_same_scores(base: Path, tmp_path: Path, finetune: str) -> None:
    from safetensors.torch import load_file

    from dataflywheel.models.base_model import content_hash
    from dataflywheel.registry.bundle import ModelBundle
    from dataflywheel.registry.predictor import Predictor

    df, pre, target, spec, model, _ = train(base, finetune, epochs=2)
    in_memory = Predictor(ModelBundle(model=model, task="generation", preprocessor=pre, target=target, spec=spec))
    expected = in_memory.scores(df)[0]  # (N, 2) before the bundle is written
    folder = write(tmp_path / "bundle", model, pre, target, spec, df)
    stored = load_file(str(folder / "model.safetensors"))
    meta = json.loads((folder / "model.json").read_text())
    assert meta["base_model"]["sha256"] == content_hash(base) and meta["base_model"]["finetune"] == finetune
    if finetune == "lora":
        assert stored and all("lora_" in k for k in stored)  # adapters only: the base is referenced
        assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
        assert sum(t.numel() for t in stored.values()) * 5 < sum(p.numel() for p in model.parameters())
    else:
        assert set(stored) == set(model.state_dict())  # every weight, the tied lm_head as a copy
    loaded = Predictor.load(folder)
    assert loaded.model.merged == (finetune == "lora")  # LoRA adapters folded into the base for inference
    assert torch.allclose(torch.as_tensor(loaded.scores(df)[0]), torch.as_tensor(expected), rtol=1e-4, atol=1e-4)


def test_a_lora_bundle_loads_in_peft_and_refuses_a_changed_base(base: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from dataflywheel.registry.predictor import Predictor

    own = tmp_path / "base"
    shutil.copytree(base, own)
    df, pre, target, spec, model, _ = train(own, "lora", epochs=1)
    folder = write(tmp_path / "bundle", model, pre, target, spec, df)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(own)), str(folder))
    ours = dict(model.named_parameters())
    for name, value in peft.named_parameters():
        if "lora_" in name:
            assert torch.equal(value, ours[f"hf.{name}"]), name
    save_tiny_llama(own, seed=1)  # other weights in the base's folder
    with pytest.raises(ModelError, match="differs from"):
        Predictor.load(folder)


def test_lora_checkpoints_hold_the_adapters_and_resume_exactly(base: Path, tmp_path: Path) -> None:
    from dataflywheel.models.weights import trained_weights
    from dataflywheel.train.checkpoint import load_checkpoint

    *_, straight, h_straight = train(base, "lora", epochs=4, checkpoint_dir=tmp_path / "straight")
    weights, state = load_checkpoint(tmp_path / "straight")  # type: ignore[misc]
    assert weights and all("lora_" in k for k in weights) and state["base"]["finetune"] == "lora"
    train(base, "lora", epochs=2, checkpoint_dir=tmp_path / "stopped")
    *_, resumed, h_resumed = train(base, "lora", epochs=4, checkpoint_dir=tmp_path / "stopped", resume=True)
    assert h_resumed.resumed_from == 2
    assert [e["loss"] for e in h_resumed.epochs] == [e["loss"] for e in h_straight.epochs]
    for key, value in trained_weights(straight).items():
        assert torch.equal(value, trained_weights(resumed)[key]), key


def test_a_loaded_bundle_generates_until_the_end_of_turn(base: Path, tmp_path: Path) -> None:
    from dataflywheel.registry.generation import generate
    from dataflywheel.registry.predictor import Predictor

    df, pre, target, spec, model, _ = train(base, "full", epochs=80)
    loaded = Predictor.load(write(tmp_path / "bundle", model, pre, target, spec, df))
    answers = generate(loaded, PROMPTS[:4], max_new_tokens=24)
    assert answers == ANSWERS[:4]  # it learned the four answers, and stopped at their end of turn
    again = generate(loaded, PROMPTS[:4], max_new_tokens=24, batch_size=1)  # greedy: padding changes nothing
    assert again == answers
    assert loaded.preprocessor.text_encoder_.stop_ids_ == [eos_id(base)]


def test_gradient_checkpointing_trains_the_same(base: Path) -> None:
    *_, plain, h_plain = train(base, "full", epochs=2)
    *_, recomputed, h_recomputed = train(base, "full", epochs=2, gradient_checkpointing=True)
    assert recomputed.hf.is_activation_checkpointing and not plain.hf.is_activation_checkpointing
    assert [e["loss"] for e in h_recomputed.epochs] == pytest.approx([e["loss"] for e in h_plain.epochs], rel=1e-5)


def test_gradient_checkpointing_is_refused_for_a_model_without_it() -> None:
    from dataflywheel.config import TrainConfig
    from dataflywheel.models.mlp import MLP
    from dataflywheel.train.batching import Batchable
    from dataflywheel.train.loop import fit

    data = Batchable.of(torch.zeros(4, 2), torch.zeros(4, 0, dtype=torch.long), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ConfigError) as err:
        fit(MLP(2, [], 1), data, None, TrainConfig(epochs=1, gradient_checkpointing=True), "binary", progress=False)
    assert err.value.where == "train.gradient_checkpointing"


def test_bad_parameters_name_the_setting(base: Path) -> None:
    from dataflywheel.models.causal_lm import build_causal_lm

    args = dict(n_numeric=0, cardinalities=[], n_outputs=2, task="generation", text_vocab_size=100,
                max_length=MAX_LENGTH, base=str(base))
    cases = [
        ({"finetune": "frozen"}, "model.params.finetune"),
        ({"finetune": "full", "lora": {"r": 4}}, "model.params.lora"),
        ({"lora": {"target_modules": ["no_such_layer"]}}, "model.params.lora.target_modules"),
        ({"max_length": 4096}, "positions"),
        ({"n_numeric": 2}, "data.exclude"),
        ({"task": "binary", "n_outputs": 1}, "model.task"),
        ({"base": str(base / "nope")}, "not found"),
    ]
    for change, expected in cases:
        with pytest.raises(ModelError, match=expected.replace(".", r"\.")):
            build_causal_lm(**{**args, **change})
