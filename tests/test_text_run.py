"""`flywheel run` with a from-scratch transformer on a small BBC News subset, then predict on raw text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dataflywheel.data.bbc import bbc_frame

from cli_helpers import flywheel

CONFIG = """
project: bbc-tiny
data:
  source: bbc.csv
  target: topic
  features: [{name: text, type: text, max_length: 64, vocab_size: 3000}]
  split: {train: 0.7, valid: 0.15, test: 0.15, seed: 42}
model:
  type: transformer
  params: {n_layer: 2, n_head: 4, d_model: 32, dropout: 0.0}
train: {epochs: 20, batch_size: 16, optimizer: adamw, lr: 0.002, seed: 0, early_stopping: null}
evaluate: {metric: macro_f1}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bbc")
    bbc_frame(67, ["business", "sports", "tech"]).write_csv(folder / "bbc.csv")
    (folder / "flywheel.yaml").write_text(CONFIG)
    r = flywheel("run", "--no-progress", cwd=folder)
    assert r.code == 0, r.err
    assert "train text(s) truncated to max_length" in r.out
    return folder


def champion(folder: Path) -> dict:
    r = flywheel("models", "show", "champion", "--json", cwd=folder)
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_registers_a_transformer_that_beats_chance(project: Path) -> None:
    doc = champion(project)
    assert doc["version"] == 1 and doc["model_type"] == "transformer"
    assert doc["metrics"]["accuracy"] >= 0.6  # chance is 1/3
    bundle = Path(doc["bundle"])
    spec = json.loads((bundle / "model.json").read_text())["spec"]
    assert spec["type"] == "transformer" and spec["args"]["max_length"] == 64
    pre = json.loads((bundle / "preprocessor.json").read_text())
    assert json.loads(pre["text_encoders"]["text"]["state"]["tokenizer_json_"])["model"]["type"] == "WordPiece"
    assert doc["lineage"]["truncated_texts"]["text"] > 0


def test_bundle_reloads_to_identical_predictions_on_raw_text(project: Path, tmp_path: Path) -> None:
    from dataflywheel.registry.predictor import Predictor

    copy = tmp_path / "bundle"
    shutil.copytree(champion(project)["bundle"], copy)
    test = pl.read_parquet(next((project / ".flywheel" / "artifacts" / "datasets").iterdir()) / "test.parquet")
    records = test.drop("topic").to_dicts()
    first, second = Predictor.load(copy).predict(records), Predictor.load(copy).predict(records)
    assert np.array_equal(first.proba, second.proba) and first.values == second.values
    assert first.truncated["text"] > 0
    accuracy = np.mean(np.array(first.values) == test.get_column("topic").to_numpy())
    assert accuracy >= 0.6

    test.drop("topic").write_csv(tmp_path / "in.csv")
    r = flywheel("predict", "--model", str(copy), str(tmp_path / "in.csv"), cwd=tmp_path)
    assert r.code == 0, r.err
    out = pl.read_csv(r.out.encode())
    assert out.get_column("prediction").to_list() == first.values
    one = Predictor.load(copy).predict({"text": "Shares in the bank fell sharply as profits slumped."})
    assert one.values[0] in {"business", "sports", "tech"} and one.proba.shape == (1, 3)
