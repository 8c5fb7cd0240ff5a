"""One model over numbers, categories and two free-text columns: `flywheel init` writes a model
that reads every kind of input (an encoder per input, concatenated before the head), and
training, ONNX export, serving and explanations all cover it."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
import yaml

from dataflywheel.loop import run
from dataflywheel.serve.app import create_app

from cli_helpers import flywheel

WORDS = {
    "billing": "invoice charge refund card payment overcharged bill price".split(),
    "outage": "down offline error crash timeout broken outage slow".split(),
}
FILLER = "the a my our please today again still help thanks".split()


def ticket(rng: random.Random, kind: str) -> str:
    words = [rng.choice(WORDS[kind]) for _ in range(rng.randint(2, 4))] + rng.sample(FILLER, 3)
    rng.shuffle(words)
    return " ".join(words)


def rows(n: int, seed: int) -> list[dict[str, Any]]:
    """``escalated`` depends on the ticket text, the reply text, the plan and the wait: a model
    that drops any of them loses signal."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind, reply = rng.choice(list(WORDS)), rng.choice(list(WORDS))
        plan, wait = rng.choice(["free", "pro", "team"]), rng.uniform(0, 10)
        score = (kind == "outage") + (reply == "billing") + (plan == "free") + (wait > 6)
        out.append({"wait_hours": round(wait, 2), "plan": plan, "ticket": ticket(rng, kind),
                    "reply": ticket(rng, reply), "escalated": "yes" if score >= 2 else "no"})
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mixed")
    pl.DataFrame(rows(320, seed=0)).write_csv(folder / "tickets.csv")
    result = flywheel("init", "--data", "tickets.csv", "--target", "escalated", cwd=folder)
    assert result.code == 0, result.err
    config = folder / "flywheel.yaml"
    cfg = yaml.safe_load(config.read_text())
    # what init wrote: one transformer over every input column
    assert cfg["model"]["type"] == "transformer"
    assert {f["name"]: f["type"] for f in cfg["data"]["features"]} == {
        "wait_hours": "number", "plan": "category", "ticket": "text", "reply": "text"}
    assert not cfg["data"].get("exclude")
    cfg["model"]["params"] |= {"n_layer": 1, "d_model": 16, "n_head": 2, "dropout": 0.0}
    cfg["train"] |= {"epochs": 25, "batch_size": 32, "lr": 0.01, "threads": 1, "early_stopping": None}
    for f in cfg["data"]["features"]:
        if f["type"] == "text":
            f |= {"vocab_size": 120, "max_length": 16}
    config.write_text(yaml.safe_dump(cfg))
    assert run(config, progress=False).version == 1
    return folder


def test_the_trained_model_reads_every_input(project: Path) -> None:
    import dataflywheel as fw

    predictor = fw.load_model("champion", project / "flywheel.yaml")
    assert predictor.model.inputs == ("numeric", "categorical", "tokens", "attention_mask",
                                      "tokens_1", "attention_mask_1")
    assert list(predictor.preprocessor.text_encoders) == ["ticket", "reply"]
    test = rows(200, seed=1)
    answers = predictor.predict(test).values
    truth = [r["escalated"] for r in test]
    assert np.mean([a == t for a, t in zip(answers, truth, strict=True)]) > 0.8
    base = predictor.predict(test).proba
    for change in ({"ticket": "refund invoice charge"}, {"reply": "crash outage down"}, {"plan": "team"},
                   {"wait_hours": 9.5}):  # each input moves the answer
        moved = predictor.predict([r | change for r in test]).proba
        assert np.abs(moved - base).max() > 0.05, change


def test_onnx_export_reads_both_texts_and_matches_torch(project: Path, tmp_path: Path) -> None:
    import dataflywheel as fw
    from dataflywheel.export.onnx import OnnxModel, export_onnx
    from dataflywheel.models.predict import predict_logits

    predictor = fw.load_model("champion", project / "flywheel.yaml")
    onnx = OnnxModel(export_onnx(predictor, tmp_path), threads=1)
    assert onnx.inputs == ("numeric", "categorical", "tokens", "attention_mask", "tokens_1", "attention_mask_1")
    batch = predictor.preprocessor.transform(pl.DataFrame(rows(40, seed=2)).drop("escalated"))
    pads = predictor.preprocessor.pad_ids_
    for size in (1, 7, 40):  # texts of two columns padded to different lengths per batch
        expected = predict_logits(predictor.model, batch.inputs, pad_id=pads, batch_size=size)
        got = predict_logits(onnx, batch.inputs, pad_id=pads, batch_size=size)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-4, rtol=1e-4)


def test_served_predictions_and_explanations_cover_every_input(project: Path) -> None:
    import dataflywheel as fw

    records = [{k: v for k, v in r.items() if k != "escalated"} for r in rows(6, seed=3)]
    app = create_app(project)

    async def calls() -> tuple[Any, Any]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            async with app.router.lifespan_context(app):
                predicted = await client.post("/v1/predict", json=records)
                explained = await client.post("/v1/explain", json=records[0])
                return predicted, explained

    predicted, explained = asyncio.run(calls())
    assert predicted.status_code == 200, predicted.text
    expected = fw.load_model("champion", project / "flywheel.yaml").predict(records)
    assert [a["prediction"] for a in predicted.json()] == [str(v) for v in expected.values]
    assert explained.status_code == 200, explained.text
    body = explained.json()
    e = body[0] if isinstance(body, list) else body.get("explanations", [body])[0]
    items = e["attributions"]
    assert {i["feature"] for i in items if "feature" in i} == {"wait_hours", "plan"}
    assert {i["column"] for i in items if "token" in i} == {"ticket", "reply"}
    # completeness: the attributions of all inputs add up to the explained change
    total = sum(i["attribution"] for i in items)
    assert total == pytest.approx(e["output"] - e["baseline_output"], abs=max(0.05, abs(e["convergence_delta"]) * 2))
    assert all(i["attribution"] is not None for i in items)


def test_validate_says_which_text_columns_an_mlp_skips(tmp_path: Path) -> None:
    pl.DataFrame(rows(60, seed=4)).write_csv(tmp_path / "tickets.csv")
    (tmp_path / "flywheel.yaml").write_text("data: {source: tickets.csv, target: escalated}\nmodel: {type: mlp}\n")
    result = flywheel("validate", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "inputs: wait_hours, plan" in result.out
    assert "reads no text: ticket, reply are not an input" in result.out
