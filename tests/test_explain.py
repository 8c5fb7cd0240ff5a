"""Per-prediction explanations: IG completeness, the feature that matters, tokens, JSON, HTML, CLI."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from dataflywheel.errors import ConfigError, DataError
from dataflywheel.explain import explain_records, explanation_html, report_section
from dataflywheel.features.preprocessor import Preprocessor
from dataflywheel.features.target import TargetEncoder
from dataflywheel.models.mlp import build_mlp
from dataflywheel.models.transformer import build_transformer
from dataflywheel.registry.bundle import ModelBundle
from dataflywheel.registry.predictor import Predictor

from cli_helpers import flywheel

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "breast-cancer" / "flywheel.yaml"
TABULAR = [("a", "number", "auto"), ("b", "number", "auto"), ("c", "category", "auto"),
           ("d", "category", "onehot")]
WORDS = "the cat sat on a mat dog ran fast slow market shares rose fell goal match".split()


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def tabular_frame(n: int = 60, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "a": rng.normal(5.0, 2.0, n), "b": rng.normal(-1.0, 3.0, n),
        "c": rng.choice(["x", "y", "z"], n), "d": rng.choice(["u", "v"], n),
        "y_bin": rng.choice(["no", "yes"], n), "y_multi": rng.choice(["p", "q", "r"], n),
        "y_reg": rng.normal(100.0, 20.0, n),
    })


def tabular_predictor(task: str, hidden: list[int] | None = None, seed: int = 0) -> Predictor:
    df = tabular_frame()
    pre = Preprocessor(TABULAR).fit(df)
    target = TargetEncoder(task).fit(df[{"binary": "y_bin", "multiclass": "y_multi", "regression": "y_reg"}[task]])
    torch.manual_seed(seed)
    model = build_mlp(n_numeric=pre.n_numeric_, cardinalities=pre.cardinalities_,
                      n_outputs=3 if task == "multiclass" else 1, task=task,
                      hidden=[16, 16] if hidden is None else hidden, activation="tanh").eval()
    return Predictor(ModelBundle(model=model, task=task, preprocessor=pre, target=target))


def text_predictor(n_numeric_cols: bool = False) -> Predictor:
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, int(rng.integers(3, 9)))) for _ in range(40)]
    df = pl.DataFrame({"text": texts, "a": rng.normal(size=40), "y": rng.choice(["a", "b", "c"], 40)})
    features = [("a", "number", "auto")] if n_numeric_cols else []
    pre = Preprocessor(features, text_features=[("text", {"max_length": 16, "vocab_size": 200})]).fit(df)
    target = TargetEncoder("multiclass").fit(df["y"])
    torch.manual_seed(0)
    model = build_transformer(n_numeric=pre.n_numeric_, cardinalities=[], n_outputs=3, task="multiclass",
                              text_vocab_size=pre.text_encoder_.vocab_size_, max_length=16, n_layer=2,
                              n_head=2, d_model=32, dropout=0.0).eval()
    return Predictor(ModelBundle(model=model, task="multiclass", preprocessor=pre, target=target))


def total(e: dict) -> float:
    return sum(a["attribution"] for a in e["attributions"])


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_tabular_attributions_are_complete(task: str) -> None:
    predictor = tabular_predictor(task)
    records = tabular_frame(5, seed=1).to_dicts()
    explanations = explain_records(predictor, records, steps=64)
    assert [a["feature"] for a in explanations[0]["attributions"]] == ["a", "b", "c", "d"]
    for e in explanations:
        change = e["output"] - e["baseline_output"]
        assert abs(total(e) - change) <= 1e-3 + 1e-2 * abs(change)
        assert abs(e["convergence_delta"]) <= 1e-3 + 1e-2 * abs(change)
    # The explained output is the prediction itself, computed independently by the predictor.
    preds = predictor.predict(records)
    if task == "binary":
        p = preds.proba[:, 1]
        log_odds = np.log(p / (1 - p))
        expected = np.where(np.array(preds.values) == "yes", log_odds, -log_odds)
    elif task == "multiclass":
        expected = np.log(preds.proba.max(axis=1))
    else:
        expected = np.array(preds.values)
    np.testing.assert_allclose([e["output"] for e in explanations], expected, rtol=1e-4, atol=1e-4)
    assert [e["prediction"] for e in explanations] == list(preds.values)


def test_the_one_feature_that_matters_gets_the_largest_attribution() -> None:
    predictor = tabular_predictor("binary", hidden=[])  # logistic regression on the encoded inputs
    names = predictor.preprocessor.feature_names_out_
    with torch.no_grad():
        predictor.model.head.weight.zero_()
        predictor.model.head.weight[0, names.index("b")] = 2.5
    records = tabular_frame(6, seed=2).to_dicts()
    z = predictor.preprocessor.transform_records(records).numeric[:, names.index("b")]
    for e, zb in zip(explain_records(predictor, records, steps=16), z, strict=True):
        attr = {a["feature"]: a["attribution"] for a in e["attributions"]}
        assert max(attr, key=lambda k: abs(attr[k])) == "b"
        sign = 1.0 if e["target_class"] == "yes" else -1.0
        assert attr["b"] == pytest.approx(sign * 2.5 * float(zb), abs=1e-4)  # linear: w * (x - mean)
        assert all(abs(attr[k]) < 1e-6 for k in ("a", "c", "d"))


def test_text_attributions_one_per_token_and_complete() -> None:
    predictor = text_predictor(n_numeric_cols=True)
    records = [{"text": "the <b>cat</b> sat", "a": 0.5}, {"text": "market shares rose fast", "a": -1.0}]
    explanations = explain_records(predictor, records, steps=32)
    tok = predictor.preprocessor.text_encoder_._tokenizer
    for record, e in zip(records, explanations, strict=True):
        ids = tok.encode(record["text"]).ids
        tokens = [a for a in e["attributions"] if "token" in a]
        assert [a["value"] for a in tokens] == ids
        assert [a["token"] for a in tokens] == [tok.id_to_token(i) for i in ids]
        assert tokens[0]["token"] == "[CLS]" and tokens[-1]["token"] == "[SEP]"
        assert tokens[0]["attribution"] == 0.0 and tokens[-1]["attribution"] == 0.0  # kept in the baseline
        assert [a["feature"] for a in e["attributions"] if "feature" in a] == ["a"]
        change = e["output"] - e["baseline_output"]
        assert abs(total(e) - change) <= 1e-3 + 1e-2 * abs(change)
    assert explanations[1]["prediction"] == predictor.predict(records[1]).values[0]


def test_a_hugging_face_classifier_is_explained_at_its_word_embeddings() -> None:
    from transformers import BertConfig, BertForSequenceClassification

    from dataflywheel.models.pretrained import PretrainedClassifier

    base = text_predictor()
    torch.manual_seed(0)
    hf = BertForSequenceClassification(BertConfig(
        vocab_size=base.preprocessor.text_encoder_.vocab_size_, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, num_labels=3, max_position_embeddings=32))
    predictor = Predictor(ModelBundle(model=PretrainedClassifier(hf, "full", 32, {}).eval(), task="multiclass",
                                      preprocessor=base.preprocessor, target=base.target))
    [e] = explain_records(predictor, [{"text": "the cat sat on a mat"}], steps=16)
    assert len(e["attributions"]) == 8 and all("token" in a for a in e["attributions"])
    change = e["output"] - e["baseline_output"]
    assert abs(total(e) - change) <= 1e-4 + 1e-2 * abs(change)


def test_explaining_never_touches_the_predictors_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the substitution hooks are active (inside every explained forward pass), the
    predictor's own model still answers as before: a server predicting on it concurrently is
    unaffected. The private copy shares the weights."""
    from dataflywheel.explain import attributions

    predictor = tabular_predictor("multiclass")
    records = tabular_frame(4, seed=3).to_dicts()
    batch = predictor.preprocessor.transform_records(records)
    numeric = torch.as_tensor(batch.numeric, dtype=torch.float32)
    categorical = torch.as_tensor(batch.categorical, dtype=torch.long)
    with torch.no_grad():
        before = predictor.model({"numeric": numeric, "categorical": categorical}).clone()
    seen: list[torch.Tensor] = []
    substituted = attributions._substituted

    @contextmanager
    def checking(*args: Any) -> Iterator[None]:
        with substituted(*args), torch.no_grad():
            seen.append(predictor.model({"numeric": numeric, "categorical": categorical}))
        with substituted(*args):
            yield

    monkeypatch.setattr(attributions, "_substituted", checking)
    explain_records(predictor, records, steps=8)
    assert seen and all(torch.equal(s, before) for s in seen)
    assert all(not m._forward_hooks for m in predictor.model.modules())
    copy = attributions.private_copy(predictor.model)
    assert copy is not predictor.model
    assert all(a is b for a, b in zip(copy.parameters(), predictor.model.parameters(), strict=True))


def test_explanations_are_json_safe() -> None:
    predictor = tabular_predictor("regression")
    record = {"a": float("nan"), "b": np.float64(2.0), "c": None, "d": "v"}
    explanations = explain_records(predictor, [record], steps=8)
    text = json.dumps(explanations, allow_nan=False)
    back = json.loads(text)
    values = {a["feature"]: a["value"] for a in back[0]["attributions"]}
    assert values == {"a": None, "b": 2.0, "c": None, "d": "v"}
    assert isinstance(back[0]["prediction"], float) and math.isfinite(back[0]["prediction"])
    assert back[0]["target_class"] is None
    text_json = json.dumps(explain_records(text_predictor(), [{"text": "goal match"}], steps=4), allow_nan=False)
    assert '"token": "goal"' in text_json


def test_bad_arguments_are_clear_errors() -> None:
    predictor = tabular_predictor("binary")
    with pytest.raises(ConfigError, match="--steps"):
        explain_records(predictor, tabular_frame(2).to_dicts(), steps=0)
    with pytest.raises(DataError, match="no records"):
        explain_records(predictor, [], steps=4)


def test_html_escapes_tokens_and_lists_features() -> None:
    text_e = {"prediction": "<i>b</i>", "target_class": "b", "explained": "log-probability", "output": -0.5,
              "baseline_output": -1.0, "convergence_delta": 0.0,
              "attributions": [{"token": "<script>alert(1)</script>", "value": 7, "attribution": 0.4},
                               {"token": "##ing", "value": 8, "attribution": -0.2}]}
    html = explanation_html([text_e])
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;i&gt;b&lt;/i&gt;" in html
    assert "rgba(22, 163, 74, 1.00)" in html and "rgba(220, 38, 38, 0.50)" in html  # sign and size
    assert ">ing</span>" in html  # a word piece joins its word
    predictor = tabular_predictor("binary")
    tab = explanation_html(explain_records(predictor, tabular_frame(2).to_dicts(), steps=4))
    assert tab.count('class="explanation"') == 2 and tab.count("<td>c</td>") == 2


def test_report_section_explains_the_first_rows() -> None:
    predictor = text_predictor()
    df = pl.DataFrame({"text": ["the cat sat", "market <rose>", "goal", "dog ran"], "y": ["a", "b", "c", "a"]})
    heading, html = report_section(predictor, df, n=2)
    assert "Explanations" in heading
    assert html.count('class="explanation"') == 2 and ">market<" in html and ">goal<" not in html


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bc_explain")
    (folder / "flywheel.yaml").write_text(EXAMPLE.read_text().replace("epochs: 50", "epochs: 3"))
    r = flywheel("run", "--no-progress", cwd=folder)
    assert r.code == 0, r.err
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True).frame.head(3).drop(columns="target")
    pl.from_pandas(data).write_csv(folder / "rows.csv")
    return folder


def test_cli_explains_a_trained_breast_cancer_model(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dataflywheel.cli.explain_command import explain

    config = trained / "flywheel.yaml"
    explain(trained / "rows.csv", model="champion", config=config, steps=16, as_json=True)
    doc = json.loads(capsys.readouterr().out)
    assert len(doc) == 3
    for e in doc:
        assert len(e["attributions"]) == 30 and e["prediction"] in ("0", "1", 0, 1)
        change = e["output"] - e["baseline_output"]
        assert abs(total(e) - change) <= 1e-3 + 2e-2 * abs(change)
    explain(trained / "rows.csv", model="v1", config=config, steps=16, as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("record ") for line in lines) == 3
    assert len(lines) == 3 * 6  # a heading and the top five features per record
    top = max(doc[0]["attributions"], key=lambda a: abs(a["attribution"]))["feature"]
    assert top in lines[1]
