"""The prediction server: predict (batched, logged before answering), feedback, bad input, probes."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import polars as pl
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from dataflywheel.data.schema import ColumnSchema, Schema
from dataflywheel.errors import ConfigError, DataError, NotFoundError
from dataflywheel.feedback.log import FeedbackRow, PredictionRow
from dataflywheel.serve.app import LabelError, ServeSettings, check_label, create_app
from dataflywheel.serve.batching import MicroBatcher
from dataflywheel.serve.schemas import record_model

from store_helpers import trained_example


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_example(tmp_path_factory.mktemp("serve"), epochs=3)


@pytest.fixture(scope="module")
def rows(project: Path) -> list[dict[str, Any]]:
    test = pl.read_parquet(next((project / ".flywheel" / "artifacts" / "datasets").iterdir()) / "test.parquet")
    return test.drop("target").head(40).to_dicts()


Call = Callable[[httpx.AsyncClient, FastAPI], Awaitable[Any]]


def serving(folder: Path, fn: Call, settings: ServeSettings | None = None, *, lifespan: bool = True) -> Any:
    """Run ``fn(client, app)`` against a fresh app over the project, inside its lifespan."""
    app = create_app(folder, settings=settings)

    async def main() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            if not lifespan:
                return await fn(client, app)
            async with app.router.lifespan_context(app):
                return await fn(client, app)

    try:
        return asyncio.run(main())
    finally:
        if not lifespan:
            app.state.server.close()


def expected(folder: Path, records: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """(label, p(class "1")) from the bundle's Predictor, bypassing the server."""
    import dataflywheel as fw

    preds = fw.load_model("champion", folder / "flywheel.yaml").predict(records)
    return [(str(v), float(p[1])) for v, p in zip(preds.values, preds.proba, strict=True)]


# -- predict ----------------------------------------------------------------------------------

def test_predict_one_record_and_a_list(project: Path, rows: list[dict[str, Any]]) -> None:
    async def calls(client: httpx.AsyncClient, app: FastAPI) -> tuple[Any, Any, Any]:
        one = await client.post("/v1/predict", json=rows[0])
        many = await client.post("/v1/predict", json=rows[1:6])
        return one, many, app.state.server.writer

    one, many, writer = serving(project, calls)
    assert one.status_code == 200 and one.headers["content-type"] == "application/json"
    body = one.json()
    assert set(body) == {"prediction_id", "model_version", "prediction", "probabilities"}
    assert body["model_version"] == 1 and set(body["probabilities"]) == {"0", "1"}
    assert math.isclose(sum(body["probabilities"].values()), 1.0, rel_tol=1e-6)
    answers = many.json()
    assert many.status_code == 200 and isinstance(answers, list) and len(answers) == 5
    want = expected(project, rows[:6])
    got = [(a["prediction"], a["probabilities"]["1"]) for a in [body, *answers]]
    assert [g[0] for g in got] == [w[0] for w in want]
    assert [g[1] for g in got] == pytest.approx([w[1] for w in want], abs=1e-6)
    logged = writer.prediction(answers[2]["prediction_id"])
    assert logged is not None and logged.model_version == 1
    assert logged.input == pytest.approx(rows[3]) and logged.output["prediction"] == answers[2]["prediction"]
    assert logged.latency_ms > 0


def test_concurrent_requests_share_forward_passes_and_are_all_logged(
        project: Path, rows: list[dict[str, Any]]) -> None:
    requests = [rows[i : i + 1 + i % 3] for i in range(30)]  # 1-3 records each, overlapping

    async def calls(client: httpx.AsyncClient, app: FastAPI) -> tuple[list[Any], list[bool], Any]:
        server = app.state.server
        before = server.writer.count(PredictionRow)
        committed_on_answer: list[bool] = []

        async def one(records: list[dict[str, Any]]) -> Any:
            r = await client.post("/v1/predict", json=records)
            # Group commit: the rows exist the moment the answer arrives.
            committed_on_answer.extend(server.writer.prediction(a["prediction_id"]) is not None for a in r.json())
            return r

        answers = await asyncio.gather(*(one(r) for r in requests))
        return answers, committed_on_answer, (server, server.writer.count(PredictionRow) - before)

    answers, committed, (server, new_rows) = serving(project, calls, ServeSettings(max_batch_size=16, max_wait_ms=50))
    n_records = sum(len(r) for r in requests)
    assert all(a.status_code == 200 for a in answers)
    sizes = list(server.engine.batcher.batch_sizes)
    assert max(sizes) > 1 and max(sizes) <= 16 and len(sizes) < len(requests)
    assert sum(sizes) == n_records
    for req, ans in zip(requests, answers, strict=True):  # each request got its own records' answers
        want = expected(project, req)
        assert [(a["prediction"], pytest.approx(a["probabilities"]["1"], abs=1e-6)) for a in ans.json()] == want
    ids = [a["prediction_id"] for ans in answers for a in ans.json()]
    assert len(committed) == n_records and all(committed)
    assert len(set(ids)) == n_records == new_rows


BAD = [
    (b"{not json", 400, None),
    (b"", 400, None),
    (b"[]", 422, "empty list"),
    (b"42", 422, "list of records"),
    (b'{"mean radius": "big"}', 422, "mean radius"),
    (b'{"mean radius": true}', 422, "mean radius"),
    (b'{"mean radius": NaN}', 422, "finite"),
    (b'{"mean radius": Infinity}', 422, "finite"),
    (b'{"mean radius": 1e400}', 422, "mean radius"),
]


def test_bad_input_gets_a_4xx_with_detail_and_the_server_stays_up(
        project: Path, rows: list[dict[str, Any]]) -> None:
    good = rows[0]
    missing = {k: v for k, v in good.items() if k != "worst area"}
    wrong_type = {**good, "mean texture": "soft"}

    async def calls(client: httpx.AsyncClient, app: FastAPI) -> tuple[list[Any], dict[str, Any], Any, Any]:
        before = app.state.server.writer.count(PredictionRow)
        results = []
        for body, _status, _text in BAD:
            r = await client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
            results.append(r)
        special = {
            "missing": await client.post("/v1/predict", json=missing),
            "wrong_in_list": await client.post("/v1/predict", json=[good, wrong_type]),
            "not_a_record": await client.post("/v1/predict", json=[good, [1, 2]]),
            "too_many": await client.post("/v1/predict", json=[good] * 11),
        }
        after = await client.post("/v1/predict", json=good)
        ready = await client.get("/v1/ready")
        return results, special, after, (ready, app.state.server.writer.count(PredictionRow) - before)

    results, special, after, (ready, logged) = serving(project, calls, ServeSettings(max_records=10))
    for (body, status, text), r in zip(BAD, results, strict=True):
        assert r.status_code == status, body
        assert "detail" in r.json()
        if text:
            assert text in str(r.json()["detail"]), body
    assert special["missing"].status_code == 422
    assert special["missing"].json()["detail"][0] == {"loc": ["body", "worst area"], "msg": "Field required",
                                                       "type": "missing"}
    assert special["wrong_in_list"].json()["detail"][0]["loc"] == ["body", 1, "mean texture"]
    assert special["not_a_record"].json()["detail"][0]["loc"] == ["body", 1]
    assert special["too_many"].status_code == 413 and "limit is 10" in special["too_many"].json()["detail"]
    assert after.status_code == 200 and ready.status_code == 200
    assert logged == 1  # only the good request was logged


@pytest.fixture(scope="module")
def category_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny table with a category column (index-encoded: an embedding)."""
    import numpy as np

    from dataflywheel.loop import run

    folder = tmp_path_factory.mktemp("serve_category")
    rng = np.random.default_rng(0)
    colour, x = rng.choice(["red", "green", "blue"], 200), rng.normal(size=200)
    pl.DataFrame({"x": x, "colour": colour, "y": ((x + (colour == "red")) > 0.5).astype(int)}).write_csv(
        folder / "d.csv")
    (folder / "flywheel.yaml").write_text("data: {source: d.csv, target: y}\ntrain: {epochs: 2}\n")
    assert run(folder / "flywheel.yaml", progress=False).version == 1
    return folder


def test_hostile_json_is_a_4xx_with_detail_and_nothing_is_logged(category_project: Path) -> None:
    """Unpaired surrogates (JSON ``\\ud800`` escapes) in a category field, and JSON nested
    deeper than the parsers go, get a 4xx with a JSON detail on every endpoint taking a body."""
    headers = {"content-type": "application/json"}
    deep = b"[" * 1100 + b"]" * 1100
    bodies = {
        "surrogate": (b'{"x": 0.5, "colour": "red\\ud800"}', 422),
        "surrogate_in_list": (b'[{"x": 0.5, "colour": "red"}, {"x": 0.1, "colour": "\\udcff"}]', 422),
        "deep": (deep, 400),
        "deep_in_field": (b'{"x": 0.5, "colour": ' + deep + b"}", 400),
    }

    async def calls(client: httpx.AsyncClient, app: FastAPI) -> tuple[dict[str, httpx.Response], Any, int]:
        writer = app.state.server.writer
        before = writer.count(PredictionRow)
        out = {}
        for name, (body, _status) in bodies.items():
            for path in ("/v1/predict", "/v1/explain?steps=2"):
                out[f"{path} {name}"] = await client.post(path, content=body, headers=headers)
        out["feedback deep"] = await client.post("/v1/feedback", content=b'{"prediction_id": ' + deep + b"}",
                                                 headers=headers)
        out["feedback surrogate"] = await client.post(
            "/v1/feedback", content=b'{"prediction_id": "a", "label": "\\ud800"}', headers=headers)
        good = await client.post("/v1/predict", json={"x": 0.5, "colour": "red"})
        return out, good, writer.count(PredictionRow) - before

    out, good, logged = serving(category_project, calls)
    for name, r in out.items():
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        assert r.json()["detail"], name
    for name, (_body, status) in bodies.items():
        for path in ("/v1/predict", "/v1/explain?steps=2"):
            assert out[f"{path} {name}"].status_code == status, (path, name)
    loc = out["/v1/predict surrogate_in_list"].json()["detail"][0]["loc"]
    assert loc == ["body", 1, "colour"] and "surrogate" in out["/v1/predict surrogate"].text
    assert "1024" in out["/v1/predict deep"].json()["detail"]
    assert good.status_code == 200 and logged == 1


def test_record_model_types_follow_the_schema() -> None:
    schema = Schema([ColumnSchema("x", "number", "Float64", 0.0), ColumnSchema("colour", "category", "String", 0.0),
                     ColumnSchema("flag", "binary", "Int64", 0.0), ColumnSchema("y", "category", "Int64", 0.0)],
                    target="y")
    Record = record_model(schema)
    assert set(Record.model_fields) == {"x", "colour", "flag"}
    ok = Record.model_validate({"x": 2, "colour": "red", "flag": 1, "id": "ignored"}).model_dump()
    assert ok == {"x": 2.0, "colour": "red", "flag": "1"}
    assert Record.model_validate({"x": None, "colour": None, "flag": True}).model_dump()["flag"] == "true"
    for bad, field in [({"x": "2", "colour": "r", "flag": 0}, "x"), ({"x": 1.0, "colour": 1.5, "flag": 0}, "colour"),
                       ({"x": 1.0, "colour": ["r"], "flag": 0}, "colour"), ({"x": 1.0, "colour": "r"}, "flag")]:
        with pytest.raises(ValidationError) as info:
            Record.model_validate(bad)
        assert info.value.errors()[0]["loc"] == (field,)


# -- feedback ---------------------------------------------------------------------------------

def test_feedback_not_found_bad_label_and_idempotency(project: Path, rows: list[dict[str, Any]]) -> None:
    async def calls(client: httpx.AsyncClient, app: FastAPI) -> dict[str, Any]:
        ids = [a["prediction_id"] for a in (await client.post("/v1/predict", json=rows[:2])).json()]
        post = client.post
        out = {
            "unknown": await post("/v1/feedback", json={"prediction_id": "f" * 32, "label": "1"}),
            "bad_label": await post("/v1/feedback", json={"prediction_id": ids[0], "label": "7"}),
            "no_label": await post("/v1/feedback", json={"prediction_id": ids[0]}),
            "nan_label": await post("/v1/feedback", content=b'{"prediction_id": "a", "label": NaN}',
                                    headers={"content-type": "application/json"}),
            "first": await post("/v1/feedback", json={"prediction_id": ids[0], "label": 1, "idempotency_key": "k"}),
            "again": await post("/v1/feedback", json={"prediction_id": ids[0], "label": 1, "idempotency_key": "k"}),
            "changed": await post("/v1/feedback", json={"prediction_id": ids[0], "label": "0", "idempotency_key": "k"}),
            "other": await post("/v1/feedback", json={"prediction_id": ids[1], "label": "0", "idempotency_key": "k"}),
            "plain": await post("/v1/feedback", json={"prediction_id": ids[1], "label": "0"}),
        }
        writer = app.state.server.writer
        out["rows"] = writer.feedback_for(ids[0]) + writer.feedback_for(ids[1])
        out["count"] = writer.count(FeedbackRow)
        return out

    out = serving(project, calls)
    assert out["unknown"].status_code == 404 and "no prediction" in out["unknown"].json()["detail"]
    assert out["bad_label"].status_code == 422 and "['0', '1']" in out["bad_label"].json()["detail"]
    assert out["no_label"].status_code == 422 and out["no_label"].json()["detail"][0]["loc"] == ["body", "label"]
    assert out["nan_label"].status_code == 422
    assert out["first"].status_code == 201 and out["first"].json()["created"] is True
    assert out["again"].status_code == 200 and out["again"].json()["feedback_id"] == out["first"].json()["feedback_id"]
    assert out["other"].status_code == 409
    changed = out["changed"]  # same key, same prediction, another label: not silently ignored
    assert changed.status_code == 409 and changed.json()["where"] == "idempotency_key 'k'"
    assert "label '1'" in changed.json()["detail"]
    assert out["plain"].status_code == 201
    assert out["count"] == 2 and [r.value for r in out["rows"]] == [{"label": "1"}, {"label": "0"}]


def test_regression_labels_must_be_numbers() -> None:
    regression = SimpleNamespace(output={"prediction": 3.2, "probabilities": None})
    assert check_label(regression, 4) == 4.0  # type: ignore[arg-type]
    with pytest.raises(LabelError):
        check_label(regression, "4")  # type: ignore[arg-type]
    classifier = SimpleNamespace(output={"prediction": "b", "probabilities": {"a": 0.2, "b": 0.8}})
    assert check_label(classifier, "a") == "a"  # type: ignore[arg-type]
    with pytest.raises(DataError):
        check_label(classifier, 1.0)  # type: ignore[arg-type]


# -- probes and lifecycle ---------------------------------------------------------------------

def test_health_ready_and_model(project: Path) -> None:
    from dataflywheel.loop import as_config, open_project
    from dataflywheel.registry import versions

    async def calls(client: httpx.AsyncClient, _app: FastAPI) -> list[Any]:
        return [await client.get(p) for p in ("/v1/health", "/v1/ready", "/v1/model")]

    health, ready, model = serving(project, calls)
    assert health.json() == {"status": "ok"} and ready.json() == {"status": "ready", "model_version": 1}
    doc = model.json()
    proj = open_project(as_config(project / "flywheel.yaml"))
    try:
        info = versions.resolve(proj, "champion")
    finally:
        proj.close()
    assert doc["version"] == info.version and doc["metrics"] == info.metrics
    assert doc["task"] == "binary" and doc["class_names"] == ["0", "1"] and doc["alias"] == "champion"
    assert len(doc["features"]) == 30 and doc["schema"]["target"] == "target"


def test_not_ready_until_started_and_unknown_alias_fails_fast(project: Path, rows: list[dict[str, Any]]) -> None:
    async def calls(client: httpx.AsyncClient, _app: FastAPI) -> list[Any]:
        return [await client.get("/v1/ready"), await client.post("/v1/predict", json=rows[0])]

    ready, predict = serving(project, calls, lifespan=False)
    assert ready.status_code == 503 and predict.status_code == 503
    with pytest.raises(NotFoundError, match="no model has the alias 'staging'"):
        create_app(project, alias="staging")
    with pytest.raises(ConfigError, match="file not found"):
        create_app(project / "missing.yaml")


# -- the micro-batcher alone ------------------------------------------------------------------

def test_batcher_isolates_a_failing_request_and_respects_the_size_limit() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()

    def fn(items: list[int]) -> list[int]:
        gate.wait(5)
        calls.append(items)
        if -1 in items:
            raise ValueError("bad item")
        return [x * 10 for x in items]

    batcher = MicroBatcher(fn, max_batch_size=4, max_wait_ms=100).start()
    try:
        futures = [batcher.submit([1, 2]), batcher.submit([-1]), batcher.submit([3]), batcher.submit([4, 5, 6]),
                   batcher.submit([7, 8, 9, 10, 11])]
        time.sleep(0.05)
        gate.set()
        assert futures[0].result(5) == [10, 20] and futures[2].result(5) == [30]
        with pytest.raises(ValueError, match="bad item"):
            futures[1].result(5)
        assert futures[3].result(5) == [40, 50, 60] and futures[4].result(5) == [70, 80, 90, 100, 110]
    finally:
        batcher.close()
    assert calls[0] == [1, 2, -1, 3]  # grouped, then replayed one request at a time
    assert [1, 2] in calls and [3] in calls
    assert all(len(c) <= 4 for c in calls if c != [7, 8, 9, 10, 11])
    assert sorted(batcher.batch_sizes) == [1, 2, 3, 5]
