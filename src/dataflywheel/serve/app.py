"""The prediction server: a FastAPI app over one model alias and the prediction log.

Endpoints (JSON in and out, rendered with orjson):

- ``POST /v1/predict``: one record (object -> object) or a list of records (list -> list);
  each answer is ``{prediction_id, model_version, prediction, probabilities}``. Records are
  validated against a model generated from the bundle's schema (422 naming the field) and run
  through the engine (the micro-batcher unless another is given). ``log_mode: sync`` (default)
  answers only after the prediction rows are committed by the group-commit writer; ``async``
  answers at once, and a crash (or kill -9) can then lose the rows not yet committed: those
  queued plus the group being written, in practice the last few milliseconds of traffic.
- ``POST /v1/feedback``: ``{prediction_id, label, comment?, idempotency_key?}`` -> 201
  ``{feedback_id, prediction_id, kind, created}`` once committed (200 with the same id when the
  key was seen before); 404 unknown prediction, 422 label outside the predicting model's classes,
  409 key reused for another prediction or label (``serve.feedback``, shared with the generation
  server).
- ``POST /v1/explain``: attributions for one record or a list (``serve.explain``).
- ``POST /v1/admin/reload``: check the alias now and swap if it moved (see ``serve.swap``).
- ``GET /v1/health`` (the process is up), ``GET /v1/ready`` (model loaded and workers running,
  else 503), ``GET /v1/model`` (version, alias, task, classes, schema, metrics),
  ``GET /v1/monitor`` (drift and live accuracy), ``GET /metrics`` (Prometheus).

Privacy: the record fields the model's bundle redacts (the ``privacy`` settings its training
data was redacted with; text columns by default) are redacted on the event loop right after
validation, before the record is predicted on, logged or explained (``ServedModel.redact``); the
raw text is never stored. Counts per kind are in ``/metrics`` (``flywheel_redactions``), texts
truncated to ``max_length`` too (``flywheel_truncated_texts``).

Every route is in one access matrix (``serve.auth``): with ``FLYWHEEL_API_TOKEN`` set, feedback
and admin routes need the bearer token, reads (model, monitor, metrics, docs) too unless
``serve.auth.read: open``, predictions only with ``serve.auth.predict: token``; bodies over
``max_body_bytes`` get a 413 (``serve.limits``). Errors are ``{"detail": ...}``: a
:class:`FlywheelError` gives its one-line headline (plus ``where``/``fix``), a validation error
gives the list of ``{loc, msg, type}``.

The app is a thin transport: what a prediction is (parse, validate, redact, forward through the
engine, log) is :class:`~dataflywheel.serve.pipeline.PredictPipeline`, and what the server holds
(model, engine, log writer, alias watcher) is :class:`~dataflywheel.serve.server.Server`.
The hot path (``/v1/predict``, ``/v1/feedback``, answered by ``serve.hotpath``): the event loop
parses and validates, the model thread runs the forward pass and queues the log write itself,
the writer thread commits and hands the answer back with one ``call_soon_threadsafe``; no
request waits on another thread more than once per step, and nothing on the loop blocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from dataflywheel.config import FlywheelConfig
from dataflywheel.errors import ConfigError, FlywheelError
from dataflywheel.serve.auth import Access, AccessMatrix, AuthMiddleware, BearerAuth
from dataflywheel.serve.docs import add_docs_routes
from dataflywheel.serve.engine import Engine
from dataflywheel.serve.explain import add_explain_route
from dataflywheel.serve.feedback import add_feedback_route, feedback_handler
from dataflywheel.serve.hotpath import Answer, HotPathMiddleware, error_answer
from dataflywheel.serve.limits import BodyLimitMiddleware
from dataflywheel.serve.metrics import MetricsMiddleware
from dataflywheel.serve.openapi import document_access, errors, records_body
from dataflywheel.serve.requests import MAX_ERRORS, BadRequest, LabelError, check_label
from dataflywheel.serve.server import Server, ServeSettings
from dataflywheel.serve.worker import RetrainProcess

__all__ = ["LabelError", "OrjsonResponse", "ServeSettings", "Server", "check_label", "config_path", "create_app"]
JSON_TYPE = "application/json"


class OrjsonResponse(JSONResponse):
    """JSON rendered by orjson (numpy scalars and arrays allowed)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def _config(project: FlywheelConfig | str | Path) -> FlywheelConfig:
    from dataflywheel.loop import as_config

    return as_config(config_path(project) if isinstance(project, (str, Path)) else project)


def config_path(project: FlywheelConfig | str | Path) -> Path:
    """The flywheel.yaml behind ``project`` (a config, a file, or the folder holding it)."""
    if isinstance(project, FlywheelConfig):
        path = project.base_dir / "flywheel.yaml"
        if not path.is_file():
            raise ConfigError("auto-retrain needs the config as a file", where=str(path),
                              fix="pass the path of flywheel.yaml rather than a config object")
        return path
    path = Path(project)
    return path / "flywheel.yaml" if path.is_dir() else path


def create_app(
    project: FlywheelConfig | str | Path = "flywheel.yaml",
    alias: str = "champion",
    settings: ServeSettings | None = None,
    *,
    auto_retrain: bool = False,
    engine: Engine | None = None,
) -> FastAPI:
    """An app serving the model ``alias`` (or a version, ``"3"``) of the project.

    ``project`` is a config, a flywheel.yaml path, or the folder holding it; ``settings``
    default to its ``serve`` section. The model is loaded here, so a missing alias or a damaged
    bundle fails now, as a :class:`FlywheelError`; the worker threads (batcher, log writer,
    alias watcher) and, with ``auto_retrain``, the retrain worker process start and stop with
    the app's lifespan. The bearer token is read from the environment now; every route is
    registered in the access matrix (``serve.auth``) as it is declared. ``engine`` replaces the
    micro-batching engine (:mod:`dataflywheel.serve.engine`).
    """
    cfg = _config(project)
    settings = settings or ServeSettings.from_config(cfg.serve)
    retrain = RetrainProcess(config_path(project)) if auto_retrain else None
    if serving_kind(cfg, alias) == "generation":  # the task's server: the OpenAI-compatible one
        from dataflywheel.serve.llm.app import create_project_generation_app

        return create_project_generation_app(cfg, alias, settings, retrain=retrain)
    server = Server(cfg, alias, settings, retrain, engine)
    access = AccessMatrix(BearerAuth.from_env(), server.settings.auth)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        server.start()
        try:
            yield
        finally:
            server.close()

    app = FastAPI(title="dataflywheel", lifespan=lifespan, default_response_class=OrjsonResponse,
                  docs_url=None, redoc_url=None)
    app.state.server = server
    app.state.access = access
    _add_error_handlers(app)
    add_docs_routes(app, access)
    routes: tuple[tuple[str, Access], ...] = (
        ("/v1/health", "public"), ("/v1/ready", "public"), ("/v1/model", "read"), ("/v1/monitor", "read"),
        ("/metrics", "read"), ("/v1/predict", "predict"), ("/v1/feedback", "write"), ("/v1/admin/*", "admin"))
    for path, kind in routes:
        access.register(path, kind)

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/v1/ready", responses=errors(503))
    async def ready() -> Response:
        reasons = server.not_ready()
        if reasons:
            return OrjsonResponse({"status": "not ready", "reasons": reasons}, status_code=503)
        return OrjsonResponse({"status": "ready", "model_version": server.model.version})

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        watcher = server.watcher
        return server.model.describe(alias=server.alias) | {
            "batching": server.engine.describe(),
            "swap": {"follows_alias": watcher is not None, "last_error": watcher.last_error if watcher else None},
            "log_mode": server.settings.log_mode}

    pipeline = server.pipeline

    async def predict_answer(body: bytes, _headers: Mapping[str, str]) -> Answer:
        return 200, await pipeline.answer_json(body)

    feedback_answer = feedback_handler(server.writer, server.labels)

    @app.post("/v1/predict", openapi_extra=records_body(server.model.record_model),
              responses=errors(400, 413, 422, 503))
    async def predict(request: Request) -> Response:
        status, content = await predict_answer(await request.body(), request.headers)
        return Response(content, status_code=status, media_type=JSON_TYPE)

    add_feedback_route(app, feedback_answer)

    @app.post("/v1/admin/reload", responses=errors(409, 503, _409="serving a fixed version: nothing to reload",
                                                   _503="the new version failed to load; the old one serves on"))
    async def reload() -> Response:
        if server.watcher is None:
            raise BadRequest(409, f"serving the fixed version {server.alias!r}; serve an alias to hot swap")
        result = await asyncio.to_thread(server.watcher.check, force=True)
        return OrjsonResponse(result.to_dict(), status_code=503 if result.error else 200)

    add_explain_route(app, server, access)

    @app.get("/v1/monitor", responses=errors(501))
    async def monitor() -> Response:
        try:
            from dataflywheel.feedback.monitor import monitor_report
        except ImportError:
            raise BadRequest(501, "monitoring is not available: dataflywheel.feedback.monitor is missing") from None
        m = server.cfg.monitor
        report = await asyncio.to_thread(monitor_report, server.project, server.model.predictor, m.window, m.bins)
        return OrjsonResponse(report)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, content_type = server.metrics.render()
        return Response(body, media_type=content_type)

    missing = access.unregistered(app)
    if missing:
        raise RuntimeError(f"routes missing from the access matrix: {', '.join(missing)}")
    document_access(app, access)
    app.add_middleware(HotPathMiddleware, routes={("POST", "/v1/predict"): predict_answer,
                                                  ("POST", "/v1/feedback"): feedback_answer})
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=server.settings.max_body_bytes)
    if access.auth.enabled:  # before the body is read; no token configured: nothing to check
        app.add_middleware(AuthMiddleware, matrix=access)
    endpoints = {getattr(r, "path", "") for r in app.routes}
    app.add_middleware(MetricsMiddleware, metrics=server.metrics, endpoints=endpoints)  # outermost: sees 413s
    return app


def serving_kind(cfg: FlywheelConfig, alias: str) -> str:
    """Which server the model under ``alias`` needs (its task's ``serving``); a reference the
    registry cannot resolve is left to the server to report."""
    from dataflywheel.loop import open_project
    from dataflywheel.registry.versions import resolve
    from dataflywheel.tasks import available_tasks, get_task

    project = open_project(cfg)
    try:
        task = resolve(project, alias).task
    except FlywheelError:
        return "records"
    finally:
        project.close()
    return get_task(task).serving if task in available_tasks() else "records"


def _add_error_handlers(app: FastAPI) -> None:
    async def known_error(_req: Request, exc: Exception) -> Response:
        status, body, headers = error_answer(exc) or (500, {"detail": "internal error"}, {})
        return OrjsonResponse(body, status_code=status, headers=dict(headers))

    app.add_exception_handler(BadRequest, known_error)
    app.add_exception_handler(FlywheelError, known_error)

    @app.exception_handler(RequestValidationError)
    async def invalid(_req: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return OrjsonResponse({"detail": errors[:MAX_ERRORS]}, status_code=422)

