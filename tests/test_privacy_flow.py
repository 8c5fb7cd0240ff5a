"""PII never reaches the store or a training dataset: redaction at ingestion, before a served
record is predicted on and logged, and so in every dataset version retraining builds."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest

from dataflywheel.config import config_from_dict
from dataflywheel.data.dataset import get_version, ingest
from dataflywheel.errors import ConfigError
from dataflywheel.loop import as_config, open_project, run

TOPICS = {
    "sport": "match team goal coach league striker season cup referee stadium".split(),
    "tech": "software chip phone network cloud robot code startup data laptop".split(),
    "money": "bank shares profit market tax budget loan inflation trader price".split(),
}
EMAIL, PHONE = "jane.roe@example.org", "555-867-5309"
CONFIG = """
project: privacy
data:
  source: data.csv
  target: topic
  features: [{name: text, type: text, max_length: 16, vocab_size: 200}]
model:
  type: transformer
  params: {n_layer: 1, n_head: 2, d_model: 16, dropout: 0.0}
train: {epochs: 4, batch_size: 16, optimizer: adamw, lr: 0.01, seed: 0, early_stopping: null, threads: 1}
evaluate: {metric: macro_f1, feedback_holdout: 0.0}
"""


def texts(n: int, seed: int, pii_every: int = 0) -> pl.DataFrame:
    """``n`` short topical sentences; every ``pii_every``-th holds an email and a phone number."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = list(TOPICS)[i % len(TOPICS)]
        words = [rng.choice(TOPICS[topic]) for _ in range(6)]
        if pii_every and i % pii_every == 0:
            words += ["mail", f"user{i}@example.com", "or", "call", f"(555) 201-{i:04d}"]
        rows.append({"text": " ".join(words), "topic": topic})
    return pl.DataFrame(rows)


def write_project(folder: Path, data: pl.DataFrame, extra: str = "") -> Path:
    data.write_csv(folder / "data.csv")
    (folder / "flywheel.yaml").write_text(CONFIG + extra)
    return folder / "flywheel.yaml"


# -- ingestion --------------------------------------------------------------------------------

def test_ingest_redacts_text_before_anything_is_stored(tmp_path: Path) -> None:
    data = texts(60, seed=1, pii_every=3).with_columns(note=pl.lit("ip 10.0.0.7"))
    cfg = as_config(write_project(tmp_path, data, "privacy: {columns: [text, note]}\n"))
    project = open_project(cfg)
    try:
        version = ingest(cfg, project)
        splits = pl.concat([version.split(s) for s in ("train", "valid", "test")])
        joined = "\n".join(splits["text"].to_list() + splits["note"].to_list())
        assert "@example.com" not in joined and "(555) 201-" not in joined and "10.0.0.7" not in joined
        assert joined.count("[email]") == 20 and joined.count("[phone]") == 20
        report = get_version(project, version.id).report["privacy"]
        assert report["columns"]["text"]["email"] == 20 and report["columns"]["text"]["phone"] == 20
        assert report["columns"]["note"]["ip"] == 60
        assert "@example.com" not in version.schema_path.read_text()
        assert ingest(cfg, project).reused  # the id hashes the source bytes: same source, same id
    finally:
        project.close()


def test_default_redacts_every_text_column_but_the_target(tmp_path: Path) -> None:
    data = texts(40, seed=2, pii_every=2)
    cfg = as_config(write_project(tmp_path, data))
    project = open_project(cfg)
    try:
        version = ingest(cfg, project)
        assert version.report["privacy"]["columns"] == {"text": {"email": 20, "phone": 20, "card": 0, "ip": 0}}
        disabled = cfg.model_copy(deep=True)
        disabled.privacy.enabled = False
        raw = ingest(disabled, project)
        assert raw.id != version.id  # other content, other id
        assert any("@example.com" in t for t in raw.split("train")["text"].to_list())
    finally:
        project.close()


def test_privacy_config_errors_name_the_field(tmp_path: Path) -> None:
    cfg = as_config(write_project(tmp_path, texts(20, seed=3), "privacy: {columns: [txet]}\n"))
    project = open_project(cfg)
    try:
        with pytest.raises(ConfigError) as err:
            ingest(cfg, project)
        assert err.value.where == "privacy.columns" and "txet" in str(err.value)
    finally:
        project.close()
    with pytest.raises(ConfigError, match="privacy.kinds"):
        config_from_dict({"data": {"source": "a.csv", "target": "y"}, "privacy": {"kinds": ["zipcode"]}})
    with pytest.raises(ConfigError, match="privacy.columns"):
        config_from_dict({"data": {"source": "a.csv", "target": "y"}, "privacy": {"columns": "all"}})


# -- serving -> store -> retrain --------------------------------------------------------------

def sqlite_text(db: Path) -> str:
    """Every cell of every table of the SQLite file, as text."""
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type = 'table'")]
        cells = [str(cell) for t in tables for row in con.execute(f'select * from "{t}"') for cell in row]
    finally:
        con.close()
    return "\n".join(cells)


def test_pii_sent_to_predict_never_reaches_the_store_nor_a_training_set(tmp_path: Path) -> None:
    from dataflywheel.feedback.retrain import retrain
    from dataflywheel.serve.app import create_app

    config = write_project(tmp_path, texts(90, seed=4))
    assert run(config, progress=False).version == 1
    labelled = texts(12, seed=5)
    records = [{"text": f"{t} contact {EMAIL} or {PHONE}"} for t in labelled["text"].to_list()]

    async def traffic(client: httpx.AsyncClient) -> list[dict[str, Any]]:
        answers = (await client.post("/v1/predict", json=records)).json()
        for answer, topic in zip(answers, labelled["topic"].to_list(), strict=True):
            r = await client.post("/v1/feedback", json={"prediction_id": answer["prediction_id"], "label": topic})
            assert r.status_code == 201, r.text
        return answers

    app = create_app(config)

    async def main() -> tuple[list[dict[str, Any]], str]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            async with app.router.lifespan_context(app):
                answers = await traffic(client)
                metrics = (await client.get("/metrics")).text
        return answers, metrics

    answers, metrics = asyncio.run(main())
    assert len(answers) == 12 and all(a["model_version"] == 1 for a in answers)
    assert 'flywheel_redactions_total{kind="email"} 12.0' in metrics
    assert 'flywheel_redactions_total{kind="phone"} 12.0' in metrics

    db = tmp_path / ".flywheel" / "flywheel.db"
    stored = sqlite_text(db)
    assert "[email]" in stored and "[phone]" in stored  # the logged inputs are there, redacted
    assert EMAIL not in stored and PHONE not in stored

    cfg = as_config(config)
    project = open_project(cfg)
    try:
        result = retrain(cfg, project)
        assert result.dataset_id is not None, result.message
        assert result.feedback.get("train", 0) + result.feedback.get("valid", 0) == 12
        version = get_version(project, result.dataset_id)
        splits = pl.concat([version.split(s) for s in ("train", "valid", "test")])
        joined = "\n".join(splits["text"].to_list())
        assert joined.count("[email]") == 12 and EMAIL not in joined and PHONE not in joined
    finally:
        project.close()
    files = [p for p in (tmp_path / ".flywheel").rglob("*") if p.is_file()]
    for path in files:  # nothing anywhere in the store: SQLite file, WAL, Parquet, bundles
        blob = path.read_bytes()
        assert EMAIL.encode() not in blob and PHONE.encode() not in blob, path


# -- one redaction step on every prediction path ----------------------------------------------

@pytest.mark.slow
def test_server_cli_and_api_give_identical_outputs_for_text_with_pii(tmp_path: Path) -> None:
    import json

    import dataflywheel as fw
    from dataflywheel.explain import explain_records
    from dataflywheel.serve.app import create_app

    from cli_helpers import flywheel

    config = write_project(tmp_path, texts(90, seed=6))
    assert run(config, progress=False).version == 1
    raw = texts(6, seed=7)["text"].to_list()
    records = [{"text": f"{t} mail {EMAIL} or call {PHONE}"} for t in raw]
    pl.DataFrame(records).write_csv(tmp_path / "batch.csv")
    app = create_app(config)

    async def online() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            async with app.router.lifespan_context(app):
                predicted = (await client.post("/v1/predict", json=records)).json()
                explained = (await client.post("/v1/explain?steps=8", json=records)).json()
        return predicted, explained

    served, served_explained = asyncio.run(online())
    predictor = fw.load_model("champion", config)
    api = predictor.predict(records)
    assert api.redacted == {"email": 6, "phone": 6}
    cli = flywheel("predict", "batch.csv", "--format", "jsonl", cwd=tmp_path)
    assert cli.code == 0, cli.err
    assert "PII redacted before scoring: email=6, phone=6" in cli.err
    batch = [json.loads(line) for line in cli.out.splitlines()]
    classes = api.class_names
    assert classes is not None
    for i, answer in enumerate(served):
        assert answer["prediction"] == api.values[i] == batch[i]["prediction"]
        online_p = [answer["probabilities"][c] for c in classes]
        np.testing.assert_allclose(online_p, api.proba[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([batch[i][f"proba_{c}"] for c in classes], api.proba[i], rtol=1e-5, atol=1e-6)

    cli_explained = flywheel("explain", "batch.csv", "--steps", "8", "--json", cwd=tmp_path)
    assert cli_explained.code == 0, cli_explained.err
    offline = json.loads(cli_explained.out)
    direct = explain_records(predictor, records, steps=8)
    for online_e, cli_e, api_e in zip(served_explained, offline, direct, strict=True):
        assert [a["token"] for a in online_e["attributions"]] == [a["token"] for a in cli_e["attributions"]] \
            == [a["token"] for a in api_e["attributions"]]
        assert not any("example" in a["token"] for a in api_e["attributions"])  # the model never saw it
        np.testing.assert_allclose(online_e["output"], api_e["output"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cli_e["output"], api_e["output"], rtol=1e-5, atol=1e-6)
