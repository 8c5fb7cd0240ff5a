"""A lone request on a tiny model runs inline: its forward pass on the event loop and its log
row committed on the same thread (no hop to the batcher or the writer), still logged, still
committed before the answer; concurrent requests still share the batcher."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from fastapi import FastAPI

from dataflywheel.feedback.log import PredictionRow
from dataflywheel.serve.app import ServeSettings, create_app

from store_helpers import trained_example


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_example(tmp_path_factory.mktemp("inline"), epochs=2)


def records(project: Path, n: int) -> list[dict[str, Any]]:
    test = pl.read_parquet(next((project / ".flywheel" / "artifacts" / "datasets").iterdir()) / "test.parquet")
    return test.drop("target").head(n).to_dicts()


def serving(folder: Path, fn: Any, settings: ServeSettings | None = None) -> Any:
    app = create_app(folder, settings=settings)

    async def main() -> Any:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            async with app.router.lifespan_context(app):
                return await fn(client, app)

    return asyncio.run(main())


def test_lone_requests_run_inline_and_are_committed_before_the_answer(project: Path) -> None:
    rows = records(project, 12)

    async def calls(client: httpx.AsyncClient, app: FastAPI) -> tuple[Any, list[bool], list[Any]]:
        server = app.state.server
        server.engine.lone_budget_s = 0.05  # a slow shared CI machine still counts the MLP as tiny
        committed: list[bool] = []
        answers = []
        for row in rows:  # one at a time: nothing to batch with
            answer = (await client.post("/v1/predict", json=row)).json()
            committed.append(server.writer.prediction(answer["prediction_id"]) is not None)
            answers.append(answer)
        return server, committed, answers

    server, committed, answers = serving(project, calls)
    engine, writer = server.engine, server.writer
    # the first request measures the model on the batcher; the rest are inline
    assert engine.inline == len(rows) - 1
    assert writer.inline_commits >= len(rows) - 1
    assert all(committed)  # log_mode sync: the row exists when the answer arrives
    assert len({a["prediction_id"] for a in answers}) == len(rows)
    import dataflywheel as fw

    expected = fw.load_model("champion", project / "flywheel.yaml").predict(rows)
    assert [a["prediction"] for a in answers] == [str(v) for v in expected.values]


def test_a_slow_model_and_concurrent_requests_go_through_the_batcher(project: Path) -> None:
    rows = records(project, 30)

    async def calls(client: httpx.AsyncClient, app: FastAPI) -> Any:
        server = app.state.server
        server.engine.lone_budget_s = 0.0  # every forward pass "too slow" to run inline
        for row in rows[:3]:
            assert (await client.post("/v1/predict", json=row)).status_code == 200
        slow = server.engine.inline
        server.engine.lone_budget_s = 1.0
        answers = await asyncio.gather(*(client.post("/v1/predict", json=r) for r in rows))
        return server, slow, answers

    server, slow, answers = serving(project, calls, ServeSettings(max_batch_size=16, max_wait_ms=50))
    assert slow == 0
    assert all(a.status_code == 200 for a in answers)
    assert max(server.engine.batcher.batch_sizes) > 1  # the crowd met in the batcher
    assert server.writer.count(PredictionRow) >= 33


def test_async_log_mode_never_commits_on_the_request_path(project: Path) -> None:
    rows = records(project, 5)

    async def calls(client: httpx.AsyncClient, app: FastAPI) -> Any:
        server = app.state.server
        server.engine.lone_budget_s = 0.05
        for row in rows:
            assert (await client.post("/v1/predict", json=row)).status_code == 200
        deadline = time.monotonic() + 10
        while server.writer.count(PredictionRow) < len(rows) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return server

    server = serving(project, calls, ServeSettings(log_mode="async"))
    assert server.writer.inline_commits == 0
    assert server.engine.inline == len(rows) - 1
