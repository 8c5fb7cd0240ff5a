"""The ``pretrained`` model: Hugging Face encoders fine-tuned in full, frozen and LoRA modes.

Unit tests use a tiny random-initialised BERT (2 layers, width 32) saved beside the MiniLM
tokenizer files; one slow test fine-tunes the real all-MiniLM-L6-v2 through ``flywheel run``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from dataflywheel.data.bbc import minilm_folder
from dataflywheel.errors import ConfigError, ModelError

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

MINILM = minilm_folder()
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
MAX_LENGTH = 24
TOPICS = {
    "business": "shares profit market bank investors economy",
    "sports": "football match goal team season coach",
    "tech": "software computer chip internet phone users",
}


def save_tiny_bert(folder: Path, seed: int, dtype: torch.dtype = torch.float32) -> Path:
    from transformers import BertConfig, BertModel
    from transformers.utils import logging

    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(seed)
    logging.disable_progress_bar()
    BertModel(config).to(dtype).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(MINILM / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), seed=0)


@pytest.fixture(scope="module", autouse=True)
def registered() -> None:
    from dataflywheel.models import registry
    from dataflywheel.models.pretrained import build_pretrained

    if "pretrained" not in registry.available_models():  # until models/registry.py registers it
        registry.register_model("pretrained", build_pretrained)


def frame(n_per_topic: int = 16, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for topic, words in TOPICS.items():
        vocab = words.split()
        for _ in range(n_per_topic):
            rows.append({"text": " ".join(rng.choice(vocab, size=int(rng.integers(4, 30)))), "topic": topic})
    return pl.DataFrame(rows)


def build(base: Path, finetune: str, **extra):
    from dataflywheel.features.preprocessor import Preprocessor
    from dataflywheel.features.target import TargetEncoder
    from dataflywheel.models.pretrained import content_hash
    from dataflywheel.models.registry import build_model, model_spec

    df = frame()
    pre = Preprocessor([], text_features=[("text", {"tokenizer": str(base), "max_length": MAX_LENGTH})]).fit(df)
    target = TargetEncoder("multiclass").fit(df.get_column("topic"))
    spec = model_spec("pretrained", n_numeric=0, cardinalities=[], n_outputs=3, task="multiclass",
                      text_vocab_size=pre.text_encoder_.vocab_size_, max_length=MAX_LENGTH, base=str(base),
                      base_hash=content_hash(base), finetune=finetune, **extra)
    return df, pre, target, spec, build_model(spec, seed=0)


def train(base: Path, finetune: str, folder: Path, **extra):
    """Fit a few epochs, write a bundle to ``folder``; return (model, preprocessor, frame, history)."""
    from dataflywheel.config import TrainConfig
    from dataflywheel.data.schema import infer_schema
    from dataflywheel.registry.bundle import ModelBundle, write_bundle
    from dataflywheel.train.loop import fit
    from dataflywheel.train.stage import encode

    df, pre, target, spec, model = build(base, finetune, **extra)
    batch = encode(pre, target, df, "topic", "multiclass")[0]
    cfg = TrainConfig(epochs=4, batch_size=16, optimizer="adamw", lr=5e-3, early_stopping=None, threads=1)
    history = fit(model, batch, None, cfg, "multiclass", progress=False)
    bundle = ModelBundle(model=model, task="multiclass", preprocessor=pre, target=target,
                         schema=infer_schema(df, "topic"), spec=spec, target_column="topic")
    write_bundle(folder, bundle, metrics={}, lineage={})
    return model, pre, df, history


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


HEAD = ("classifier", "pooler")


@pytest.mark.parametrize("finetune", ["full", "frozen", "lora"])
def test_each_mode_trains_exactly_its_parameters(tiny_base: Path, tmp_path: Path, finetune: str) -> None:
    from dataflywheel.config import TrainConfig
    from dataflywheel.train.loop import fit
    from dataflywheel.train.stage import encode

    df, pre, target, _spec, model = build(tiny_base, finetune)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if finetune == "full":
        assert trainable == {n for n, _ in model.named_parameters()}
    elif finetune == "frozen":
        assert trainable and all(any(h in n for h in HEAD) for n in trainable)
    else:
        assert any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
        assert all("lora_" in n or any(h in n for h in HEAD) for n in trainable)
    before = snapshot(model)
    cfg = TrainConfig(epochs=1, batch_size=16, optimizer="adamw", lr=5e-3, early_stopping=None, threads=1)
    fit(model, encode(pre, target, df, "topic", "multiclass")[0], None, cfg, "multiclass", progress=False)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable
    query = next(n for n in before if n.endswith("layer.0.attention.self.query.weight")
                 or n.endswith("layer.0.attention.self.query.base_layer.weight"))
    assert (query in changed) == (finetune == "full")


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_a_half_precision_base_trains_in_fp32(tmp_path: Path, finetune: str) -> None:
    # Many bases ship in bf16; Adam on bf16 weights would drop small updates (train.bf16 is autocast).
    base = save_tiny_bert(tmp_path / "bf16-bert", seed=0, dtype=torch.bfloat16)
    model = build(base, finetune)[-1]
    assert {p.dtype for p in model.parameters()} == {torch.float32}


@pytest.mark.parametrize("finetune", ["full", "frozen", "lora"])
def test_bundle_reloads_to_identical_predictions(tiny_base: Path, tmp_path: Path, finetune: str) -> None:
    from dataflywheel.models.predict import predict_proba
    from dataflywheel.registry.predictor import Predictor

    model, pre, df, history = train(tiny_base, finetune, tmp_path / "bundle")
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]
    batch = pre.transform(df)
    expected = predict_proba(model, batch.inputs, "multiclass", pad_id=pre.text_encoder_.pad_id_)
    records = df.drop("topic").to_dicts()
    first = Predictor.load(tmp_path / "bundle").predict(records)
    second = Predictor.load(tmp_path / "bundle").predict(records)
    assert np.array_equal(first.proba, second.proba) and first.values == second.values
    if finetune == "lora":  # loading folds the adapters into the base weights: same function, new rounding
        np.testing.assert_allclose(first.proba, expected, atol=1e-5)
        assert list(first.proba.argmax(axis=1)) == list(expected.argmax(axis=1))
    else:
        assert np.array_equal(first.proba, expected)
    meta = json.loads((tmp_path / "bundle" / "model.json").read_text())
    assert meta["base_model"]["finetune"] == finetune
    assert meta["base_model"]["path"] == str(tiny_base)
    assert meta["spec"]["args"]["base_hash"] == meta["base_model"]["sha256"]


def test_a_loaded_lora_bundle_is_merged_and_runs_on_every_backend(tiny_base: Path, tmp_path: Path) -> None:
    from dataflywheel.export.backends import compare_backends
    from dataflywheel.registry.predictor import Predictor

    train(tiny_base, "lora", tmp_path / "bundle")
    predictor = Predictor.load(tmp_path / "bundle")
    names = [n for n, _ in predictor.model.named_modules()]
    assert not any("lora_" in n for n in names)  # plain Linear layers: int8 and ONNX see a plain model
    with pytest.raises(ModelError, match="merged for inference"):
        predictor.model.bundle_state_dict()
    result = compare_backends(predictor, frame(n_per_topic=8, seed=1), target="topic", repeats=1)
    for backend in ("int8", "onnx", "onnx-int8"):
        assert result["backends"][backend]["label_agreement"] >= 0.9
    assert result["backends"]["onnx"]["max_abs_diff"] < 1e-4


def test_lora_and_frozen_bundles_store_only_adapters_and_head(tiny_base: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    for mode in ("full", "frozen", "lora"):
        train(tiny_base, mode, tmp_path / mode)
    size = {m: (tmp_path / m / "model.safetensors").stat().st_size for m in ("full", "frozen", "lora")}
    assert size["lora"] * 50 < size["full"] and size["frozen"] * 50 < size["full"]
    keys = set(load_file(str(tmp_path / "lora" / "model.safetensors")))
    assert keys and all("lora_" in k or any(h in k for h in HEAD) for k in keys)
    assert not any("word_embeddings" in k for k in keys)


def test_a_bundle_on_a_different_base_is_refused(tiny_base: Path, tmp_path: Path) -> None:
    from dataflywheel.models.pretrained import content_hash
    from dataflywheel.registry.predictor import Predictor

    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    train(base, "lora", tmp_path / "lora")
    train(base, "full", tmp_path / "full")
    trained_on = content_hash(base)
    save_tiny_bert(base, seed=1)  # same architecture, other weights
    now = content_hash(base)
    assert now != trained_on
    with pytest.raises(ModelError) as err:
        Predictor.load(tmp_path / "lora")
    message = str(err.value)
    assert trained_on[:16] in message and now[:16] in message
    assert str(base) in message and "re-train" in message
    assert Predictor.load(tmp_path / "full").predict({"text": "shares fell"}).values[0] in TOPICS


def test_a_base_folder_with_missing_files_is_refused(tiny_base: Path, tmp_path: Path) -> None:
    from dataflywheel.registry.predictor import Predictor

    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    train(base, "lora", tmp_path / "lora")
    (base / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="lacks model weights"):
        Predictor.load(tmp_path / "lora")
    (base / "config.json").unlink()
    with pytest.raises(ModelError, match="lacks config.json and model weights"):
        Predictor.load(tmp_path / "lora")
    shutil.rmtree(base)
    with pytest.raises(ModelError, match="base model folder not found"):
        Predictor.load(tmp_path / "lora")


def test_bad_parameters_name_the_setting(tiny_base: Path) -> None:
    from dataflywheel.models.pretrained import build_pretrained

    args = dict(n_numeric=0, cardinalities=[], n_outputs=3, task="multiclass", text_vocab_size=30522,
                max_length=MAX_LENGTH, base=str(tiny_base))
    cases = [
        ({"finetune": "partial"}, "model.params.finetune"),
        ({"lora": {"rank": 4}}, "model.params.lora.rank"),
        ({"lora": {"r": 0}}, "model.params.lora.r"),
        ({"lora": {"target_modules": ["no_such_layer"]}}, "model.params.lora.target_modules"),
        ({"finetune": "full", "lora": {"r": 4}}, "model.params.lora"),
        ({"max_length": 512}, "max_length"),
        ({"n_numeric": 2}, "data.exclude"),
        ({"base": str(tiny_base / "nope")}, "not found"),
    ]
    for change, expected in cases:
        with pytest.raises(ModelError, match=expected.replace(".", r"\.")):
            build_pretrained(**{**args, **change})


def test_prepare_config_points_the_text_column_at_the_base(tiny_base: Path, tmp_path: Path) -> None:
    from dataflywheel.config import config_from_dict
    from dataflywheel.data.schema import infer_schema
    from dataflywheel.models.pretrained import content_hash, prepare_config

    shutil.copytree(tiny_base, tmp_path / "models" / "tiny")
    df = frame().with_columns(pl.lit(1.0).alias("score"))
    schema = infer_schema(df, "topic", overrides={"text": "text"})
    raw = {"data": {"source": "x.csv", "target": "topic", "exclude": ["score"],
                    "features": [{"name": "text", "max_length": 48}]},
           "model": {"type": "pretrained", "params": {"base": "models/tiny", "finetune": "frozen"}}}
    cfg = config_from_dict(raw, base_dir=tmp_path)
    prepared = prepare_config(cfg, schema)
    base = tmp_path / "models" / "tiny"
    assert prepared.model.params["base"] == "models/tiny"  # relative to the project: portable
    assert prepared.model.params["base_hash"] == content_hash(base)
    (text,) = prepared.data.features
    assert text.tokenizer == "models/tiny" and text.max_length == 48
    assert cfg.model.params == {"base": "models/tiny", "finetune": "frozen"}  # the input is not changed

    other = config_from_dict({**raw, "model": {"type": "mlp"}}, base_dir=tmp_path)
    assert prepare_config(other, schema) is other
    clash = {**raw, "data": {**raw["data"], "features": [{"name": "text", "tokenizer": "elsewhere"}]}}
    with pytest.raises(ConfigError, match="own tokenizer"):
        prepare_config(config_from_dict(clash, base_dir=tmp_path), schema)
    missing = {**raw, "model": {"type": "pretrained", "params": {"base": "models/none"}}}
    with pytest.raises(ModelError, match="not found"):
        prepare_config(config_from_dict(missing, base_dir=tmp_path), schema)


CONFIG = """
project: bbc-minilm
data:
  source: bbc.csv
  target: topic
  features: [{name: text, type: text, max_length: 64}]
  split: {train: 0.6, valid: 0.2, test: 0.2, seed: 42}
model:
  type: pretrained
  params: {base: minilm, finetune: lora, lora: {r: 8, alpha: 16, dropout: 0.0}}
train: {epochs: 3, batch_size: 12, optimizer: adamw, lr: 0.003, seed: 0, threads: 2, early_stopping: null}
evaluate: {metric: macro_f1}
"""


@pytest.mark.slow
def test_lora_fine_tunes_minilm_through_flywheel_run(tmp_path: Path) -> None:
    from dataflywheel.data.bbc import bbc_frame, link_minilm
    from dataflywheel.registry import versions
    from dataflywheel.registry.predictor import Predictor
    from dataflywheel.store import Project

    from cli_helpers import flywheel

    bbc_frame(20, ["business", "sports", "tech"]).write_csv(tmp_path / "bbc.csv")
    link_minilm(tmp_path / "minilm")
    (tmp_path / "flywheel.yaml").write_text(CONFIG)

    r = flywheel("run", "--no-progress", cwd=tmp_path)
    assert r.code == 0, r.err
    project = Project.open(tmp_path / ".flywheel")
    try:
        info = versions.resolve(project, "champion")
        losses = [e["loss"] for e in versions.run_of(project, info.run_id).history]
        folder = project.artifacts.path(info.artifact)
    finally:
        project.close()
    assert losses[-1] < losses[0]
    meta = json.loads((folder / "model.json").read_text())
    assert meta["base_model"]["finetune"] == "lora" and meta["base_model"]["path"] == "minilm"
    assert (folder / "model.safetensors").stat().st_size < 2_000_000  # the base's weights are 90 MB
    records = pl.read_csv(tmp_path / "bbc.csv").drop("topic").head(12).to_dicts()
    first, second = Predictor.load(folder).predict(records), Predictor.load(folder).predict(records)
    assert np.array_equal(first.proba, second.proba) and first.values == second.values


def _fit_lora(base: Path, epochs: int, folder: Path, resume: bool = False):
    """A LoRA model on ``base`` fitted ``epochs`` epochs with early stopping on a validation
    split and checkpoints in ``folder``; returns (model, history)."""
    from dataflywheel.config import TrainConfig
    from dataflywheel.train.loop import fit
    from dataflywheel.train.stage import encode

    df, pre, target, _, model = build(base, "lora")
    train_b = encode(pre, target, df.head(40), "topic", "multiclass")[0]
    valid_b = encode(pre, target, df.tail(8), "topic", "multiclass")[0]
    cfg = TrainConfig(epochs=epochs, batch_size=8, optimizer="adamw", lr=5e-3, threads=1,
                      early_stopping={"patience": 50, "metric": "val_loss"})
    history = fit(model, train_b, valid_b, cfg, "multiclass", checkpoint_dir=folder, resume=resume, progress=False)
    return model, history


def test_lora_checkpoints_hold_the_trained_part_and_resume_exactly(tiny_base: Path, tmp_path: Path) -> None:
    from dataflywheel.models.weights import trained_weights
    from dataflywheel.train.checkpoint import latest_checkpoint, load_checkpoint

    once, h_once = _fit_lora(tiny_base, 4, tmp_path / "once")
    weights, state = load_checkpoint(tmp_path / "once")  # type: ignore[misc]
    trainable = {k for k, p in once.named_parameters() if p.requires_grad}
    assert set(weights) == trainable and any("lora_" in k for k in weights)
    assert not any("word_embeddings" in k for k in weights)
    assert state["base"]["sha256"] == once.base_reference()["sha256"]
    full = sum(t.numel() for t in once.state_dict().values())
    assert sum(t.numel() for t in weights.values()) * 50 < full
    kept = [cb["best_weights"] for cb in state["callbacks"].values() if cb.get("best_weights")]
    assert kept and all(set(w) == trainable for w in kept)  # early stopping's best epoch: adapters too
    assert (latest_checkpoint(tmp_path / "once") / "model.safetensors").stat().st_size * 50 < full * 4

    _fit_lora(tiny_base, 2, tmp_path / "twice")
    resumed, h_resumed = _fit_lora(tiny_base, 4, tmp_path / "twice", resume=True)
    assert h_resumed.resumed_from == 2
    assert [e["loss"] for e in h_resumed.epochs] == [e["loss"] for e in h_once.epochs]
    # early stopping put back the best epoch's adapters in both runs: the same ones
    for key, value in trained_weights(once).items():
        assert torch.equal(value, trained_weights(resumed)[key]), key


def test_a_lora_checkpoint_does_not_resume_on_a_changed_base(tiny_base: Path, tmp_path: Path) -> None:
    from dataflywheel.models.pretrained import content_hash

    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    _fit_lora(base, 1, tmp_path / "ckpt")
    trained_on = content_hash(base)
    save_tiny_bert(base, seed=1)
    with pytest.raises(ModelError) as err:
        _fit_lora(base, 2, tmp_path / "ckpt", resume=True)
    assert trained_on[:16] in str(err.value) and content_hash(base)[:16] in str(err.value)
    assert "checkpoint" in str(err.value)


def test_a_checkpoint_with_every_weight_still_resumes(tiny_base: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints written before they kept the trained part alone hold the whole state dict."""
    from dataflywheel.models.weights import trained_weights
    from dataflywheel.train import callbacks, checkpoint

    straight, h_straight = _fit_lora(tiny_base, 2, tmp_path / "straight")
    with monkeypatch.context() as m:  # the weights and early stopping's best ones, whole
        for module in (checkpoint, callbacks):
            m.setattr(module, "trained_weights", lambda model: model.state_dict())
        _fit_lora(tiny_base, 1, tmp_path / "old")
    written, state = checkpoint.load_checkpoint(tmp_path / "old")  # type: ignore[misc]
    assert any("word_embeddings" in k for k in written)
    assert any(any("word_embeddings" in k for k in cb.get("best_weights") or {})
               for cb in state["callbacks"].values())
    resumed, h_resumed = _fit_lora(tiny_base, 2, tmp_path / "old", resume=True)
    assert h_resumed.resumed_from == 1
    assert [e["loss"] for e in h_resumed.epochs] == [e["loss"] for e in h_straight.epochs]
    for key, value in trained_weights(straight).items():
        assert torch.equal(value, trained_weights(resumed)[key]), key


def _train_in_project(project: Path, base: str, finetune: str = "lora"):
    """Train through prepare_config and the training stage's builder on a project whose
    flywheel.yaml names ``base``; the bundle goes inside the project's store."""
    from dataflywheel.config import TrainConfig, config_from_dict
    from dataflywheel.data.schema import infer_schema
    from dataflywheel.features.preprocessor import Preprocessor
    from dataflywheel.features.target import TargetEncoder
    from dataflywheel.models.pretrained import prepare_config
    from dataflywheel.models.registry import build_model, model_spec
    from dataflywheel.registry.bundle import ModelBundle, write_bundle
    from dataflywheel.train.loop import fit
    from dataflywheel.train.stage import encode

    df = frame()
    schema = infer_schema(df, "topic", overrides={"text": "text"})
    raw = {"data": {"source": "x.csv", "target": "topic", "features": [{"name": "text", "max_length": MAX_LENGTH}]},
           "model": {"type": "pretrained", "params": {"base": base, "finetune": finetune}}}
    cfg = prepare_config(config_from_dict(raw, base_dir=project), schema)
    pre = Preprocessor.from_schema(schema, cfg.data.features, text=True, base_dir=project).fit(df)
    target = TargetEncoder("multiclass").fit(df.get_column("topic"))
    spec = model_spec("pretrained", n_numeric=0, cardinalities=[], n_outputs=3, task="multiclass",
                      text_vocab_size=pre.text_encoder_.vocab_size_, max_length=MAX_LENGTH, **cfg.model.params)
    model = build_model(spec, seed=0, base_dirs=[project])
    train_cfg = TrainConfig(epochs=2, batch_size=16, optimizer="adamw", lr=5e-3, early_stopping=None, threads=1)
    fit(model, encode(pre, target, df, "topic", "multiclass")[0], None, train_cfg, "multiclass", progress=False)
    folder = project / ".flywheel" / "artifacts" / "models" / "v1"
    bundle = ModelBundle(model=model, task="multiclass", preprocessor=pre, target=target, schema=schema, spec=spec,
                         target_column="topic")
    write_bundle(folder, bundle, metrics={}, lineage={})
    return folder, df


def test_a_lora_bundle_is_portable_and_in_peft_format(tiny_base: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from dataflywheel.models.pretrained import content_hash
    from dataflywheel.registry.predictor import Predictor

    old = tmp_path / "trained-here"
    shutil.copytree(tiny_base, old / "models" / "tiny")
    folder, df = _train_in_project(old, "models/tiny")
    records = df.drop("topic").head(12).to_dicts()
    expected = Predictor.load(folder).predict(records)

    meta = json.loads((folder / "model.json").read_text())
    assert meta["base_model"] == {"path": "models/tiny", "sha256": content_hash(old / "models" / "tiny"),
                                  "finetune": "lora"}
    assert meta["spec"]["args"]["base"] == "models/tiny"
    for path in folder.iterdir():  # no file of the bundle names the machine's folders
        assert str(tmp_path) not in path.read_bytes().decode("utf-8", errors="replace"), path.name

    moved = tmp_path / "elsewhere" / "project"  # the whole project, another place (or machine)
    shutil.move(old, moved)
    bundle = moved / ".flywheel" / "artifacts" / "models" / "v1"
    again = Predictor.load(bundle).predict(records)
    assert again.values == expected.values and np.array_equal(again.proba, expected.proba)

    # peft's own format: adapter_config.json + adapter_model.safetensors load with PeftModel
    adapter = json.loads((bundle / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "models/tiny" and adapter["peft_type"] == "LORA"
    assert (bundle / "adapter_model.safetensors").is_file()
    hf = AutoModelForSequenceClassification.from_pretrained(str(moved / "models" / "tiny"), num_labels=3,
                                                            use_safetensors=True)
    peft_model = PeftModel.from_pretrained(hf, str(bundle)).eval()
    predictor = Predictor.load(bundle)
    batch = predictor.preprocessor.transform(df.head(12))
    ids, mask = batch.tokens.pad(np.arange(12), predictor.preprocessor.text_encoder_.pad_id_)
    with torch.no_grad():
        logits = peft_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask).long()).logits
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), expected.proba, atol=1e-5)


def test_a_pickle_only_base_is_refused_unless_allowed(tiny_base: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from dataflywheel.models.pretrained import build_pretrained

    base = tmp_path / "bin-bert"
    shutil.copytree(tiny_base, base)
    torch.save(load_file(str(base / "model.safetensors")), base / "pytorch_model.bin")
    (base / "model.safetensors").unlink()
    args = dict(n_numeric=0, cardinalities=[], n_outputs=3, task="multiclass", text_vocab_size=30522,
                max_length=MAX_LENGTH, base=str(base), finetune="frozen")
    with pytest.raises(ModelError, match="pickle-based") as err:
        build_pretrained(**args)
    assert err.value.where == "model.params.allow_pickle_weights"
    model = build_pretrained(**args, allow_pickle_weights=True)
    assert model.hf.bert.embeddings.word_embeddings.weight.dtype == torch.float32


def test_bases_load_with_use_safetensors(tiny_base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForSequenceClassification

    from dataflywheel.models.pretrained import build_pretrained

    seen: list[object] = []
    original = AutoModelForSequenceClassification.from_pretrained.__func__  # type: ignore[attr-defined]

    def spy(cls, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(kwargs.get("use_safetensors"))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", classmethod(spy))
    build_pretrained(n_numeric=0, cardinalities=[], n_outputs=3, task="multiclass", text_vocab_size=30522,
                     max_length=MAX_LENGTH, base=str(tiny_base), finetune="frozen")
    assert seen == [True]


def test_a_hub_base_is_referenced_by_its_name(tiny_base: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from dataflywheel.registry.predictor import Predictor

    cache = tmp_path / "hf-cache"
    snapshot = cache / "models--tiny-org--tiny-bert" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_base, snapshot)
    (cache / "models--tiny-org--tiny-bert" / "refs").mkdir()
    (cache / "models--tiny-org--tiny-bert" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    project = tmp_path / "project"
    project.mkdir()
    folder, df = _train_in_project(project, "tiny-org/tiny-bert", finetune="frozen")
    meta = json.loads((folder / "model.json").read_text())
    assert meta["base_model"]["name"] == "tiny-org/tiny-bert" and "path" not in meta["base_model"]
    assert meta["spec"]["args"]["base"] == "tiny-org/tiny-bert"
    assert str(cache) not in (folder / "model.json").read_text()
    assert Predictor.load(folder).predict(df.drop("topic").head(3).to_dicts()).values[0] in TOPICS
