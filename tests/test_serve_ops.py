"""Server operations: metrics, bearer token, body limit, hot swap, async logging, the retrain process."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from dataflywheel.config import ServeConfig
from dataflywheel.feedback.log import PredictionRow
from dataflywheel.registry import versions
from dataflywheel.serve.app import ServeSettings, create_app
from dataflywheel.serve.batching import MicroBatcher
from dataflywheel.serve.swap import AliasWatcher
from dataflywheel.serve.worker import RetrainProcess
from dataflywheel.store import Project

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "breast-cancer" / "flywheel.yaml"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with two model versions (different seeds); champion on v1."""
    from dataflywheel.loop import run

    folder = tmp_path_factory.mktemp("ops")
    text = EXAMPLE.read_text().replace("epochs: 50", "epochs: 2")
    (folder / "flywheel.yaml").write_text(text)
    assert run(folder / "flywheel.yaml", progress=False).version == 1
    (folder / "flywheel.yaml").write_text(text.replace("seed: 0", "seed: 1"))
    assert run(folder / "flywheel.yaml", progress=False).version == 2
    set_champion(folder, 1)
    return folder


@pytest.fixture(scope="module")
def rows(project: Path) -> list[dict[str, Any]]:
    test = pl.read_parquet(next((project / ".flywheel" / "artifacts" / "datasets").iterdir()) / "test.parquet")
    return test.drop("target").head(20).to_dicts()


def set_champion(folder: Path, version: int) -> None:
    proj = Project.open(folder / ".flywheel")
    try:
        if versions.alias_version(proj, "champion") != version:
            versions.promote(proj, version, reason="test")
    finally:
        proj.close()


def serving(folder: Path, fn: Callable[[httpx.AsyncClient, FastAPI], Awaitable[Any]],
            settings: ServeSettings | None = None) -> Any:
    app = create_app(folder, settings=settings)

    async def main() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
            async with app.router.lifespan_context(app):
                return await fn(client, app)

    return asyncio.run(main())


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# -- metrics ----------------------------------------------------------------------------------

def test_metrics_count_requests_errors_batches_and_model_version(project: Path, rows: list[dict[str, Any]]) -> None:
    async def calls(client: httpx.AsyncClient, _app: FastAPI) -> tuple[httpx.Response, str]:
        for r in rows[:3]:
            assert (await client.post("/v1/predict", json=r)).status_code == 200
        assert (await client.post("/v1/predict", json=rows[3:7])).status_code == 200
        assert (await client.post("/v1/predict", content=b"{oops")).status_code == 400
        assert (await client.get("/no/such/path")).status_code == 404
        m = await client.get("/metrics")
        return m, (await client.get("/metrics")).text

    first, again = serving(project, calls)
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/plain")
    s = samples(first.text)
    ep = ("endpoint", "/v1/predict")
    assert s[("flywheel_requests_total", (ep, ("method", "POST"), ("status", "200")))] == 4
    assert s[("flywheel_requests_total", (ep, ("method", "POST"), ("status", "400")))] == 1
    assert s[("flywheel_errors_total", (ep, ("status", "400")))] == 1
    assert s[("flywheel_errors_total", (("endpoint", "other"), ("status", "404")))] == 1
    assert s[("flywheel_request_latency_seconds_count", (ep,))] == 5
    assert s[("flywheel_predictions_total", ())] == 7
    assert s[("flywheel_batch_size_count", ())] >= 2 and s[("flywheel_batch_size_sum", ())] == 7
    assert s[("flywheel_model_version", ())] == 1
    # /metrics counts itself, and a second app has its own registry (counts start again).
    metrics_ep = (("endpoint", "/metrics"), ("method", "GET"), ("status", "200"))
    assert samples(again)[("flywheel_requests_total", metrics_ep)] == 1
    fresh = serving(project, lambda c, _a: c.get("/metrics"))
    assert ("flywheel_requests_total", (ep, ("method", "POST"), ("status", "200"))) not in samples(fresh.text)


# -- auth and limits --------------------------------------------------------------------------

def test_bearer_token_guards_feedback_and_admin_but_not_predict(
        project: Path, rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_API_TOKEN", "s3cret-token")

    async def calls(client: httpx.AsyncClient, _app: FastAPI) -> dict[str, httpx.Response]:
        pred = await client.post("/v1/predict", json=rows[0])
        fb = {"prediction_id": pred.json()["prediction_id"], "label": "1"}
        return {
            "predict": pred,
            "none": await client.post("/v1/feedback", json=fb),
            "basic": await client.post("/v1/feedback", json=fb, headers={"Authorization": "Basic s3cret-token"}),
            "wrong": await client.post("/v1/feedback", json=fb, headers={"Authorization": "Bearer s3cret-tokeN"}),
            "right": await client.post("/v1/feedback", json=fb, headers={"Authorization": "Bearer s3cret-token"}),
            "admin_none": await client.post("/v1/admin/reload"),
            "admin_wrong": await client.post("/v1/admin/reload", headers={"Authorization": "Bearer x"}),
            "admin_right": await client.post("/v1/admin/reload", headers={"Authorization": "Bearer s3cret-token"}),
        }

    r = serving(project, calls)
    assert r["predict"].status_code == 200
    for key in ("none", "basic", "admin_none"):
        assert r[key].status_code == 401, key
        assert r[key].headers["www-authenticate"] == "Bearer" and "FLYWHEEL_API_TOKEN" in r[key].json()["detail"]
    assert r["wrong"].status_code == 403 and r["admin_wrong"].status_code == 403
    assert r["right"].status_code == 201 and r["admin_right"].status_code == 200


MATRIX_CALLS = {  # (method, path) -> access class
    ("GET", "/v1/health"): "public", ("GET", "/v1/ready"): "public",
    ("GET", "/v1/model"): "read", ("GET", "/v1/monitor"): "read", ("GET", "/metrics"): "read",
    ("GET", "/docs"): "read", ("GET", "/docs/oauth2-redirect"): "read", ("GET", "/openapi.json"): "read",
    ("GET", "/docs/assets/swagger-ui.css"): "read",
    ("POST", "/v1/predict"): "predict", ("POST", "/v1/explain?steps=2"): "predict",
    ("POST", "/v1/feedback"): "write", ("POST", "/v1/admin/reload"): "admin",
    ("GET", "/v1/not-a-route"): "unregistered",
}


def test_every_route_follows_the_access_matrix(
        project: Path, rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_API_TOKEN", "tok")

    def run(settings: ServeSettings | None) -> tuple[dict[Any, int], dict[Any, int], list[str], int]:
        async def calls(client: httpx.AsyncClient,
                        app: FastAPI) -> tuple[dict[Any, int], dict[Any, int], list[str], int]:
            pid = (await client.post("/v1/predict", json=rows[0], headers={"Authorization": "Bearer tok"})).json()
            bodies = {"/v1/predict": rows[0], "/v1/explain?steps=2": rows[0],
                      "/v1/feedback": {"prediction_id": pid["prediction_id"], "label": "1"}}
            out: dict[str, dict[Any, int]] = {"none": {}, "token": {}}
            for who, headers in (("none", {}), ("token", {"Authorization": "Bearer tok"})):
                for method, path in MATRIX_CALLS:
                    r = await client.request(method, path, json=bodies.get(path), headers=headers)
                    out[who][(method, path)] = r.status_code
            app.add_api_route("/v1/later", lambda: {"ok": True})  # declared without an entry
            missing = app.state.access.unregistered(app)
            later = (await client.get("/v1/later")).status_code
            return out["none"], out["token"], missing, later

        return serving(project, calls, settings)

    def answered(status: int, kind: str) -> bool:  # let through: the route's own answer
        return status == 404 if kind == "unregistered" else 200 <= status < 300

    none, token, missing, later = run(None)
    assert missing == ["/v1/later"] and later == 401  # a route never registered is closed
    for call, kind in MATRIX_CALLS.items():
        assert answered(token[call], kind), (call, token[call])
        assert (none[call] == 401) == (kind in ("read", "write", "admin", "unregistered")), (call, none[call])
        assert none[call] == 401 or answered(none[call], kind), (call, none[call])
    from dataflywheel.config import AuthConfig

    none, _, _, _ = run(ServeSettings(auth=AuthConfig(read="open", predict="token")))
    for call, kind in MATRIX_CALLS.items():
        assert (none[call] == 401) == (kind in ("predict", "write", "admin", "unregistered")), (call, none[call])
    monkeypatch.delenv("FLYWHEEL_API_TOKEN")
    none, _, _, later = run(None)
    assert later == 200 and all(answered(none[c], k) for c, k in MATRIX_CALLS.items()), none


def test_openapi_lists_bodies_errors_and_the_bearer_scheme(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_API_TOKEN", "tok")

    async def call(client: httpx.AsyncClient, _app: FastAPI) -> Any:
        return (await client.get("/openapi.json", headers={"Authorization": "Bearer tok"})).json()

    doc = serving(project, call)
    paths = doc["paths"]
    explain = paths["/v1/explain"]["post"]
    body = explain["requestBody"]["content"]["application/json"]["schema"]
    record, listed = body["anyOf"]
    assert "mean radius" in record["properties"] and listed["items"] == record
    assert [p["name"] for p in explain["parameters"]] == ["steps"]
    assert paths["/v1/predict"]["post"]["requestBody"] == explain["requestBody"]
    expected = {("/v1/predict", "post"): {"400", "413", "422", "503"},
                ("/v1/explain", "post"): {"400", "413", "422", "501"},
                ("/v1/feedback", "post"): {"404", "409", "413", "422", "503", "401", "403"},
                ("/v1/admin/reload", "post"): {"409", "503", "401", "403"},
                ("/v1/model", "get"): {"401", "403"}, ("/v1/monitor", "get"): {"501", "401", "403"},
                ("/v1/ready", "get"): {"503"}}
    for (path, method), codes in expected.items():
        op = paths[path][method]
        errors = {c for c in op["responses"] if c[0] in "45"}
        assert codes <= errors, (path, sorted(errors))
        for c in codes:
            assert op["responses"][c]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        assert ("security" in op) == ("401" in codes), path
    assert "401" not in paths["/v1/predict"]["post"]["responses"]
    assert "401" not in paths["/v1/health"]["get"]["responses"]
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert "detail" in doc["components"]["schemas"]["Error"]["properties"]


def test_body_limit_gives_413_with_json_detail_and_the_server_stays_up(
        project: Path, rows: list[dict[str, Any]]) -> None:
    big = b"[" + b",".join([b'{"mean radius": 1.0}'] * 200) + b"]"  # ~4 KB
    assert len(big) > 2048

    async def chunks() -> Any:
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    async def calls(client: httpx.AsyncClient, _app: FastAPI) -> list[httpx.Response]:
        return [await client.post("/v1/predict", content=big, headers={"content-type": "application/json"}),
                await client.post("/v1/predict", content=chunks()),  # no Content-Length: counted as it streams
                await client.post("/v1/feedback", content=chunks()),
                await client.post("/v1/predict", json=rows[0])]

    declared, streamed, feedback, after = serving(project, calls, ServeSettings(max_body_bytes=2048))
    for r in (declared, streamed, feedback):
        assert r.status_code == 413 and "2048 bytes" in r.json()["detail"]
    assert "content-length" not in streamed.request.headers
    assert after.status_code == 200


def test_docs_page_and_its_assets_come_from_the_package(project: Path) -> None:
    """/docs references no other host, every asset it names is served, and the package ships them."""
    import fnmatch
    import re
    import tomllib

    from dataflywheel.serve.docs import ASSETS

    async def calls(client: httpx.AsyncClient, _app: FastAPI) -> tuple[httpx.Response, dict[str, httpx.Response], Any]:
        page = await client.get("/docs")
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: *'([^']+)'""", page.text)
        assets = {u: await client.get(u) for pair in urls for u in pair if u}
        extra = [await client.get(p) for p in ("/docs/oauth2-redirect", "/redoc")]
        return page, assets, extra

    page, assets, (redirect, redoc) = serving(project, calls)
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "cdn." not in page.text
    assert all(not u.startswith(("http:", "https:", "//")) for u in assets), list(assets)
    assert {u.rsplit("/", 1)[-1] for u in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css", "openapi.json"}
    for url, r in assets.items():
        assert r.status_code == 200 and len(r.content) > 100, url
    assert assets["/openapi.json"].json()["paths"]
    assert redirect.status_code == 200 and redoc.status_code == 404
    root = Path(__file__).resolve().parents[1]
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setuptools["package-data"]["dataflywheel"]
    package = root / "src" / "dataflywheel"
    for f in ASSETS.iterdir():
        assert any(fnmatch.fnmatch(f.relative_to(package).as_posix(), p) for p in patterns), f


def test_settings_come_from_the_serve_section(project: Path, tmp_path: Path) -> None:
    s = ServeSettings.from_config(ServeConfig(max_batch_size=7, log_mode="async", swap_poll_seconds=3), threads=1)
    assert (s.max_batch_size, s.log_mode, s.swap_poll_seconds, s.threads, s.max_records) == (7, "async", 3, 1, 1000)
    cfg = (project / "flywheel.yaml").read_text().replace("store:", "xx") + (
        f"store: {{root: {project / '.flywheel'}}}\nserve: {{max_batch_size: 5, max_body_bytes: 4096}}\n")
    (tmp_path / "flywheel.yaml").write_text(cfg)
    app = create_app(tmp_path)
    try:
        server = app.state.server
        assert server.engine.batcher.max_batch_size == 5 and server.settings.max_body_bytes == 4096
    finally:
        app.state.server.close()


# -- hot swap ---------------------------------------------------------------------------------

def test_hot_swap_follows_promote_and_rollback(project: Path, rows: list[dict[str, Any]]) -> None:
    async def until_version(client: httpx.AsyncClient, version: int) -> float:
        started = time.monotonic()
        while time.monotonic() - started < 10:
            r = await client.post("/v1/predict", json=rows[0])
            assert r.status_code == 200
            if r.json()["model_version"] == version:
                return time.monotonic() - started
            await asyncio.sleep(0.02)
        raise AssertionError(f"still not serving v{version}")

    async def calls(client: httpx.AsyncClient, app: FastAPI) -> tuple[Any, ...]:
        first = (await client.post("/v1/predict", json=rows[0])).json()["model_version"]
        set_champion(project, 2)
        await until_version(client, 2)
        proj = Project.open(project / ".flywheel")
        try:
            versions.rollback(proj, reason="test")
        finally:
            proj.close()
        await until_version(client, 1)
        model = (await client.get("/v1/model")).json()
        return first, model, samples((await client.get("/metrics")).text), app.state.server.writer

    first, model, s, writer = serving(project, calls, ServeSettings(swap_poll_seconds=0.05))
    assert first == 1 and model["version"] == 1 and model["swap"] == {"follows_alias": True, "last_error": None}
    assert model["device"] == "cpu"  # serve.device auto: a small MLP serves on the CPU
    assert s[("flywheel_model_swaps_total", ())] == 2 and s[("flywheel_model_version", ())] == 1
    assert {r.model_version for r in _logged_rows(writer)} >= {1, 2}


def _logged_rows(writer: Any) -> list[PredictionRow]:
    from sqlalchemy import select

    with writer.store.transaction() as s:
        return list(s.scalars(select(PredictionRow)))


def test_admin_reload_swaps_at_once(project: Path, rows: list[dict[str, Any]]) -> None:
    async def calls(client: httpx.AsyncClient, _app: FastAPI) -> tuple[Any, ...]:
        unchanged = (await client.post("/v1/admin/reload")).json()
        set_champion(project, 2)
        try:
            reloaded = (await client.post("/v1/admin/reload")).json()
            after = (await client.post("/v1/predict", json=rows[0])).json()["model_version"]
        finally:
            set_champion(project, 1)
        return unchanged, reloaded, after

    unchanged, reloaded, after = serving(project, calls, ServeSettings(swap_poll_seconds=600))
    assert unchanged == {"previous": 1, "version": 1, "swapped": False, "error": None}
    assert reloaded == {"previous": 1, "version": 2, "swapped": True, "error": None} and after == 2


def test_requests_in_flight_run_on_the_model_they_arrived_with(project: Path, rows: list[dict[str, Any]]) -> None:
    app = create_app(project)
    server = app.state.server
    try:
        old = server.model
        new = server._load(2)
        items = [(old, rows[0]), (new, rows[1]), (old, rows[2]), (new, rows[0])]
        out = server.engine.forward(items)
        assert [o["model_version"] for o in out] == [1, 2, 1, 2]
        assert out[0]["probabilities"] == old.forward([rows[0]])[0]["probabilities"]
        assert out[3]["probabilities"] == new.forward([rows[0]])[0]["probabilities"]
    finally:
        server.close()


def test_watcher_keeps_the_old_model_when_a_version_fails_to_load() -> None:
    target = {"v": 1}
    loads: list[int] = []
    installed: list[int] = []

    def load(v: int) -> str:
        loads.append(v)
        if v == 2:
            raise OSError("bundle damaged")
        return f"model-{v}"

    w = AliasWatcher(lambda: target["v"], load, lambda _m, v: installed.append(v), version=1, poll_seconds=0.01)
    target["v"] = 2
    failed = w.check()
    assert failed.swapped is False and failed.version == 1 and "bundle damaged" in (failed.error or "")
    assert w.check().swapped is False and loads == [2]  # not retried until forced or the alias moves
    assert w.check(force=True).swapped is False and loads == [2, 2]
    target["v"] = 3
    w.start()
    try:
        deadline = time.monotonic() + 5
        while w.version != 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        w.close()
    assert w.version == 3 and installed == [3] and w.last_error is None and not w.alive


# -- batching and logging -----------------------------------------------------------------------

def test_a_lone_request_does_not_wait_for_a_batch() -> None:
    batcher = MicroBatcher(lambda xs: [x + 1 for x in xs], max_wait_ms=500).start()
    try:
        started = time.perf_counter()
        assert batcher.submit([1]).result(5) == [2]
        assert time.perf_counter() - started < 0.2
    finally:
        batcher.close()


def test_async_log_mode_answers_then_commits(project: Path, rows: list[dict[str, Any]]) -> None:
    async def calls(client: httpx.AsyncClient, app: FastAPI) -> tuple[list[str], Any]:
        answers = [(await client.post("/v1/predict", json=r)).json() for r in rows[:5]]
        ids = [a["prediction_id"] for a in answers]
        writer = app.state.server.writer
        deadline = time.monotonic() + 5
        while not all(writer.prediction(i) for i in ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return ids, writer

    ids, writer = serving(project, calls, ServeSettings(log_mode="async"))
    assert all(writer.prediction(i) is not None for i in ids)


def test_monitor_endpoint(project: Path, rows: list[dict[str, Any]]) -> None:
    pytest.importorskip("dataflywheel.feedback.monitor")

    async def calls(client: httpx.AsyncClient, _app: FastAPI) -> httpx.Response:
        for r in rows:
            await client.post("/v1/predict", json=r)
        return await client.get("/v1/monitor")

    r = serving(project, calls)
    assert r.status_code == 200 and isinstance(r.json(), dict) and r.json()


# -- the retrain worker process -----------------------------------------------------------------

def test_retrain_process_starts_stops_and_tolerates_a_missing_module(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = RetrainProcess(tmp_path / "flywheel.yaml", module="dataflywheel_no_such_worker").start()
    assert not missing.alive and missing.stop() is None
    (tmp_path / "fake_worker.py").write_text(
        "import sys, time\nassert sys.argv[1:3] == ['--config', sys.argv[2]]\n"
        "open(sys.argv[2] + '.started', 'w').close()\ntime.sleep(30)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    proc = RetrainProcess(tmp_path / "flywheel.yaml", module="fake_worker").start()
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "flywheel.yaml.started").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.alive and proc.process is not None and proc.process.args[:2] == [sys.executable, "-m"]
        assert (tmp_path / "flywheel.yaml.started").exists()
    finally:
        code = proc.stop(timeout=5)
    assert code is not None and code != 0 and not proc.alive


def test_hot_path_and_the_fastapi_routes_answer_alike(
        project: Path, rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """/v1/predict and /v1/feedback are answered by the pure-ASGI hot path; the FastAPI routes
    (docs, or an app without that layer) must give the same statuses, bodies and headers."""
    from dataflywheel.serve.hotpath import HotPathMiddleware

    monkeypatch.setenv("FLYWHEEL_API_TOKEN", "tok")
    auth = {"Authorization": "Bearer tok"}

    async def exchange(client: httpx.AsyncClient) -> list[httpx.Response]:
        pred = await client.post("/v1/predict", json=rows[:2])
        pid = pred.json()[0]["prediction_id"]
        return [pred,
                await client.post("/v1/predict", content=b'{"mean radius": NaN}',
                                  headers={"content-type": "application/json"}),
                await client.post("/v1/predict", content=b"[1, 2"),
                await client.post("/v1/feedback", json={"prediction_id": pid, "label": "1"}),
                await client.post("/v1/feedback", json={"prediction_id": pid, "label": "1", "idempotency_key": pid},
                                  headers=auth),
                await client.post("/v1/feedback", json={"prediction_id": pid, "label": "1", "idempotency_key": pid},
                                  headers=auth),
                await client.post("/v1/feedback", json={"prediction_id": "f" * 32, "label": "1"}, headers=auth),
                await client.post("/v1/feedback", json={"prediction_id": pid, "label": "7"}, headers=auth),
                await client.post("/v1/feedback", json={"prediction_id": pid}, headers=auth)]

    async def calls(client: httpx.AsyncClient, app: FastAPI) -> tuple[list[httpx.Response], list[httpx.Response]]:
        hot = await exchange(client)  # builds the app's stack, hot path included
        assert any(m.cls is HotPathMiddleware for m in app.user_middleware)
        app.user_middleware = [m for m in app.user_middleware if m.cls is not HotPathMiddleware]
        plain = app.build_middleware_stack()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=plain), base_url="http://ops") as routed:
            return hot, await exchange(routed)

    hot, routed = serving(project, calls)
    assert [r.status_code for r in hot] == [r.status_code for r in routed] == [200, 422, 400, 401, 201, 200, 404,
                                                                               422, 422]
    strip = {"prediction_id", "feedback_id"}
    for a, b in zip(hot, routed, strict=True):
        assert a.headers["content-type"] == b.headers["content-type"] == "application/json"
        assert a.headers.get("www-authenticate") == b.headers.get("www-authenticate")
        ja, jb = a.json(), b.json()
        if isinstance(ja, list) and ja and "prediction_id" in ja[0]:
            ja, jb = [{k: v for k, v in x.items() if k not in strip} for x in ja], [
                {k: v for k, v in x.items() if k not in strip} for x in jb]
        elif isinstance(ja, dict) and "feedback_id" in ja:
            ja, jb = {k: v for k, v in ja.items() if k not in strip}, {k: v for k, v in jb.items() if k not in strip}
        assert ja == jb


def test_a_busy_port_is_one_clear_error() -> None:
    import socket

    from dataflywheel.errors import FlywheelError
    from dataflywheel.serve import check_port

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(FlywheelError, match=f"cannot listen on 127.0.0.1:{port}"):
            check_port("127.0.0.1", port)


def test_serve_device_follows_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from dataflywheel.errors import ConfigError
    from dataflywheel.serve.model import serve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert serve_device("auto", "torch") == torch.device("cpu") == serve_device("cpu", "onnx-int8")
    with pytest.raises(ConfigError, match=r"serve.device: 'cuda' is not available"):
        serve_device("cuda", "torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert serve_device("auto", "torch") == torch.device("cuda", 0)
    assert serve_device("auto", "torch", n_params=10_000) == torch.device("cpu")
    assert serve_device("auto", "onnx-int8") == torch.device("cpu")  # ONNX Runtime here is the CPU build
    with pytest.raises(ConfigError, match=r"serve.device: 'cuda' runs the torch backend only; the int8 backend"):
        serve_device("cuda", "int8")
    with pytest.raises(ValueError, match="must be auto, cpu, cuda or cuda:N"):
        ServeConfig(device="gpu")
    with pytest.raises(ValueError, match="device 'cuda' runs the torch backend only; the onnx backend"):
        ServeConfig(backend="onnx", device="cuda")
