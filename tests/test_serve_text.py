"""Serving a text model: raw text in, micro-batched and padded, truncation counted, bad text
refused with a 422 naming the field, PII redacted before prediction, explanations."""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
from fastapi import FastAPI

from dataflywheel.config import PrivacyConfig
from dataflywheel.loop import run
from dataflywheel.serve.app import ServeSettings, create_app

TOPICS = {
    "sport": "match team goal coach league striker season cup referee stadium".split(),
    "tech": "software chip phone network cloud robot code startup data laptop".split(),
    "money": "bank shares profit market tax budget loan inflation trader price".split(),
}
MAX_LENGTH = 12
CONFIG = f"""
project: serve-text
data:
  source: data.csv
  target: topic
  features: [{{name: text, type: text, max_length: {MAX_LENGTH}, vocab_size: 200}}]
model:
  type: transformer
  params: {{n_layer: 1, n_head: 2, d_model: 16, dropout: 0.0}}
train: {{epochs: 4, batch_size: 16, optimizer: adamw, lr: 0.01, seed: 0, early_stopping: null, threads: 1}}
evaluate: {{metric: macro_f1}}
"""


def sentence(rng: random.Random, topic: str, n_words: int) -> str:
    return " ".join(rng.choice(TOPICS[topic]) for _ in range(n_words))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("serve_text")
    rng = random.Random(0)
    rows = [{"text": sentence(rng, t, rng.randint(3, 8)), "topic": t} for _ in range(30) for t in TOPICS]
    pl.DataFrame(rows).write_csv(folder / "data.csv")
    (folder / "flywheel.yaml").write_text(CONFIG)
    assert run(folder / "flywheel.yaml", progress=False).version == 1
    return folder


def serving(folder: Path, fn: Callable[[httpx.AsyncClient], Awaitable[Any]],
            settings: ServeSettings | None = None) -> Any:
    app: FastAPI = create_app(folder, settings=settings)

    async def main() -> Any:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            async with app.router.lifespan_context(app):
                return await fn(client)

    return asyncio.run(main())


def test_raw_text_batched_and_padded_matches_the_predictor(project: Path) -> None:
    import dataflywheel as fw

    rng = random.Random(1)
    records = [{"text": sentence(rng, t, n)} for t, n in zip(list(TOPICS) * 4, range(1, 13), strict=True)]
    settings = ServeSettings(max_batch_size=64, max_wait_ms=20.0)

    async def calls(client: httpx.AsyncClient) -> tuple[list[Any], list[Any]]:
        as_list = (await client.post("/v1/predict", json=records)).json()
        concurrent = await asyncio.gather(*(client.post("/v1/predict", json=r) for r in records))
        return as_list, [r.json() for r in concurrent]

    as_list, concurrent = serving(project, calls, settings)
    expected = fw.load_model("champion", project / "flywheel.yaml").predict(records)
    for answers in (as_list, concurrent):
        assert [a["prediction"] for a in answers] == [str(v) for v in expected.values]
        got = np.array([[a["probabilities"][c] for c in expected.class_names] for a in answers])
        np.testing.assert_allclose(got, expected.proba, atol=1e-5)  # padding changes nothing


def test_bad_text_is_a_422_naming_the_field(project: Path) -> None:
    bad: list[Any] = [{"text": ""}, {"text": "   "}, {"text": 5}, {"text": None}, {"text": ["a"]}, {}]

    async def calls(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.post("/v1/predict", json=b) for b in bad]

    for body, r in zip(bad, serving(project, calls), strict=True):
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"][0]["loc"] == ["body", "text"], (body, r.text)


def test_invalid_utf8_and_lone_surrogates_are_4xx_with_detail(project: Path) -> None:
    async def calls(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        headers = {"content-type": "application/json"}
        raw = await client.post("/v1/predict", content=b'{"text": "caf\xe9 \xff bank"}', headers=headers)
        surrogate = await client.post("/v1/predict", content=b'{"text": "bank \\ud800 loan"}', headers=headers)
        ok = await client.post("/v1/predict", json={"text": "café bank loan 銀行"})
        return raw, surrogate, ok

    raw, surrogate, ok = serving(project, calls)
    assert 400 <= raw.status_code < 500 and raw.json()["detail"]
    assert surrogate.status_code == 422 and surrogate.json()["detail"][0]["loc"] == ["body", "text"]
    assert "surrogate" in surrogate.json()["detail"][0]["msg"]
    assert ok.status_code == 200 and ok.json()["prediction"] in TOPICS


def test_long_text_is_truncated_and_counted_pii_redacted_and_model_describes_it(project: Path) -> None:
    long_text = " ".join(["bank"] * 50)

    async def calls(client: httpx.AsyncClient) -> tuple[Any, Any, str]:
        one = await client.post("/v1/predict", json=[{"text": long_text}, {"text": "goal"}, {"text": long_text}])
        truncated = (await client.get("/metrics")).text
        pii = await client.post("/v1/predict", json={"text": "bank loan, mail a.b@example.com"})
        model = (await client.get("/v1/model")).json()
        return one, (pii, model, truncated), (await client.get("/metrics")).text

    one, (pii, model, truncated), metrics = serving(project, calls)
    assert one.status_code == 200 and len(one.json()) == 3
    assert "flywheel_truncated_texts_total 2.0" in truncated
    assert pii.status_code == 200 and 'flywheel_redactions_total{kind="email"} 1.0' in metrics
    assert model["features"] == {"text": "text"} and model["redacted_fields"] == ["text"]


def test_nothing_to_redact_costs_nothing(project: Path) -> None:
    from dataflywheel.loop import as_config, open_project
    from dataflywheel.serve.model import load_served_model

    proj = open_project(as_config(project / "flywheel.yaml"))
    try:
        on = load_served_model(proj, "champion", privacy=PrivacyConfig())
        assert on.redact_columns == ("text",) and on.redactor is not None
        bundle = load_served_model(proj, "champion")  # the settings its training data was redacted with
        assert bundle.redact_columns == ("text",) and bundle.redactor is not None
        for off in (PrivacyConfig(enabled=False), PrivacyConfig(columns=["elsewhere"])):
            served = load_served_model(proj, "champion", privacy=off)
            assert served.redactor is None
            records = [{"text": "x@y.com 555-123-4567"}]
            assert served.redact(records) == (records, {})
        assert on.redact([{"text": "x@y.com"}])[0] == [{"text": "[email]"}]
    finally:
        proj.close()


def test_a_served_model_holds_its_bundles_schema(project: Path) -> None:
    from dataclasses import replace

    from dataflywheel.loop import as_config, open_project
    from dataflywheel.serve.model import build_served_model, load_served_model

    proj = open_project(as_config(project / "flywheel.yaml"))
    try:
        served = load_served_model(proj, "champion")
        assert served.schema is served.predictor.schema
        assert served.describe()["schema"] == served.schema.to_dict()
        predictor = served.predictor
        predictor.bundle = replace(predictor.bundle, schema=None)  # a bundle built by hand, without one
        with pytest.raises(ValueError, match="schema"):
            build_served_model(predictor, served.version, {})
    finally:
        proj.close()


def test_explain_answers_501_until_the_module_exists(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dataflywheel.explain", None)  # import now raises ImportError

    async def call(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/v1/explain", json={"text": "bank loan"})

    r = serving(project, call)
    assert r.status_code == 501 and "dataflywheel.explain" in r.json()["detail"]


def test_explain_returns_one_answer_per_record(project: Path) -> None:
    pytest.importorskip("dataflywheel.explain")

    async def calls(client: httpx.AsyncClient) -> tuple[httpx.Response, ...]:
        one = await client.post("/v1/explain?steps=4", json={"text": "bank loan profit"})
        many = await client.post("/v1/explain?steps=4", json=[{"text": "goal"}, {"text": "chip code"}])
        bad = await client.post("/v1/explain?steps=0", json={"text": "goal"})
        empty = await client.post("/v1/explain", json={"text": ""})
        return one, many, bad, empty

    one, many, bad, empty = serving(project, calls)
    assert one.status_code == 200 and one.json()["model_version"] == 1
    assert many.status_code == 200 and len(many.json()) == 2
    assert bad.status_code == 422 and "steps" in bad.json()["detail"]
    assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == ["body", "text"]


def test_explain_never_changes_concurrent_predictions(project: Path) -> None:
    """Explanations run on the model the server predicts with; predictions made while they run
    must equal the ones made alone (same labels, same probabilities, no 5xx)."""
    pytest.importorskip("dataflywheel.explain")
    rng = random.Random(2)
    records = [{"text": sentence(rng, t, n)} for t, n in zip(list(TOPICS) * 8, range(2, 26), strict=True)]
    settings = ServeSettings(max_batch_size=4, max_wait_ms=1.0)

    async def calls(client: httpx.AsyncClient) -> tuple[list[Any], list[httpx.Response], list[httpx.Response]]:
        alone = [(await client.post("/v1/predict", json=r)).json() for r in records]

        async def predictions() -> list[httpx.Response]:
            out = []
            for _ in range(4):
                for r in records:
                    out.append(await client.post("/v1/predict", json=r))
                    await asyncio.sleep(0)
            return out

        async def explanations() -> list[httpx.Response]:
            long_text = {"text": " ".join(["bank"] * 40)}
            return [await client.post("/v1/explain?steps=64", json=[long_text, {"text": "goal"}])
                    for _ in range(6)]

        during, explained = await asyncio.gather(predictions(), explanations())
        return alone, during, explained

    alone, during, explained = serving(project, calls, settings)
    assert all(r.status_code == 200 for r in explained), [r.text for r in explained if r.status_code != 200]
    assert [r.status_code for r in during] == [200] * len(during), [r.text for r in during if r.status_code != 200]
    for i, r in enumerate(during):
        want, got = alone[i % len(alone)], r.json()
        assert got["prediction"] == want["prediction"]
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)


def test_a_missing_text_is_the_same_answer_online_and_in_batch(project: Path, tmp_path: Path) -> None:
    """Beside other inputs a missing text is read as empty on every path; as the only input it
    is refused on every path (the server used to refuse what the batch path scored)."""
    import dataflywheel as fw
    from dataflywheel.errors import DataError

    with pytest.raises(DataError, match="missing text"):
        fw.load_model("champion", project / "flywheel.yaml").predict([{"text": None}])

    rng = random.Random(2)
    rows = [{"words": sentence(rng, t, rng.randint(3, 8)), "n": float(i % 7), "topic": t}
            for i in range(30) for t in TOPICS]
    pl.DataFrame(rows).write_csv(tmp_path / "data.csv")
    (tmp_path / "flywheel.yaml").write_text(
        CONFIG.replace("features: [{name: text", "features: [{name: n, type: number}, {name: words"))
    assert run(tmp_path / "flywheel.yaml", progress=False).version == 1
    records = [{"words": None, "n": 3.0}, {"words": "bank loan", "n": 1.0}]
    expected = fw.load_model("champion", tmp_path / "flywheel.yaml").predict(records)

    async def calls(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.post("/v1/predict", json=r) for r in records]

    answers = serving(tmp_path, calls)
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    got = np.array([[a.json()["probabilities"][c] for c in expected.class_names] for a in answers])
    np.testing.assert_allclose(got, expected.proba, atol=1e-6)
