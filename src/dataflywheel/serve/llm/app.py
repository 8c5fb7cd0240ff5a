"""The app that serves a generation model: the OpenAI-compatible routes over the continuously
batched engine, every completion logged by the prediction log's group-commit writer.

- :func:`create_project_generation_app` serves a project's registered generation model under an
  alias (``flywheel serve`` on a generation model, through ``serve.app.create_app``): the
  access matrix and body limit of the classifier server, hot swap when the alias moves
  (:class:`~dataflywheel.serve.llm.server.GenerationServer`).
- :func:`create_generation_app` serves a :class:`~dataflywheel.serve.llm.generator.ServedGenerator`
  (a model folder, say) with a given :class:`~dataflywheel.feedback.log.LogWriter`.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (predict access), ``POST
/v1/feedback`` (write access: thumbs, ratings, corrections, choices and comments on a logged
completion, named by its response ``id``; the prediction server's handler,
:mod:`~dataflywheel.serve.feedback`, on the same pure-ASGI hot path), ``GET /v1/models`` and
``GET /metrics`` (read access), ``GET /v1/health`` and ``GET /v1/ready`` (public); the engine
and the writer start and stop with the app's lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import orjson
from fastapi import FastAPI, Response

from dataflywheel.feedback.completion_feedback import text_redactor
from dataflywheel.feedback.labels import FeedbackChecker
from dataflywheel.feedback.log import LogWriter
from dataflywheel.serve.feedback import add_feedback_route, feedback_handler
from dataflywheel.serve.hotpath import HotPathMiddleware
from dataflywheel.serve.llm.completions import Completions
from dataflywheel.serve.llm.engine import CacheSettings, ContinuousBatchEngine
from dataflywheel.serve.llm.generator import ServedGenerator
from dataflywheel.serve.llm.routes import add_generation_routes
from dataflywheel.serve.metrics import MetricsMiddleware

if TYPE_CHECKING:
    from dataflywheel.config import FlywheelConfig
    from dataflywheel.privacy import Redactor
    from dataflywheel.serve.auth import AccessMatrix
    from dataflywheel.serve.server import ServeSettings
    from dataflywheel.serve.worker import RetrainProcess

JSON = "application/json"


def create_generation_app(generator: ServedGenerator, writer: LogWriter, *, cache: CacheSettings | None = None,
                          log_mode: Literal["sync", "async"] = "sync", access: AccessMatrix | None = None,
                          feedback_redactor: Redactor | None = None) -> FastAPI:
    """``access``: the access matrix to enforce (None: every route open). Feedback text is
    redacted by the generator's own redactor, else by ``feedback_redactor`` (default: the
    default PII kinds), so no raw free text is stored."""
    engine = ContinuousBatchEngine(generator.model, generator.eos_ids, cache)
    completions = Completions(generator, engine, writer, log_mode=log_mode)
    fallback = feedback_redactor if feedback_redactor is not None else text_redactor(None)

    def start() -> None:
        writer.start()
        completions.engine.start()

    def stop() -> None:
        completions.engine.close()
        writer.close()

    def not_ready() -> list[str]:
        return [] if completions.engine.alive and writer.alive else ["engine or log writer not running"]

    checker = FeedbackChecker(writer.store, redactor=lambda: completions.generator.redactor or fallback)
    return _app(completions, start, stop, not_ready, checker, access=access)


def create_project_generation_app(cfg: FlywheelConfig, alias: str, settings: ServeSettings, *,
                                  retrain: RetrainProcess | None = None) -> FastAPI:
    from dataflywheel.serve.auth import AccessMatrix, BearerAuth
    from dataflywheel.serve.llm.server import GenerationServer

    server = GenerationServer(cfg, alias, log_mode=settings.log_mode, swap_poll_seconds=settings.swap_poll_seconds,
                              threads=settings.threads, retrain=retrain)
    access = AccessMatrix(BearerAuth.from_env(), settings.auth)
    app = _app(server.completions, server.start, server.close, server.not_ready, server.feedback, access=access,
               max_body_bytes=settings.max_body_bytes)
    app.state.server = server
    return app


def _app(completions: Completions, start: Callable[[], None], stop: Callable[[], None],
         not_ready: Callable[[], list[str]], feedback: FeedbackChecker, *, access: AccessMatrix | None = None,
         max_body_bytes: int | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        start()
        try:
            yield
        finally:
            stop()

    app = FastAPI(title="dataflywheel", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.completions = completions
    add_generation_routes(app, completions)
    feedback_answer = feedback_handler(completions.writer, feedback, completions=True)
    add_feedback_route(app, feedback_answer)

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/v1/ready")
    async def ready() -> Response:
        reasons = not_ready()
        if reasons:
            return Response(orjson.dumps({"status": "not ready", "reasons": reasons}), status_code=503,
                            media_type=JSON)
        return Response(orjson.dumps({"status": "ready", "model_version": completions.generator.version}),
                        media_type=JSON)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, content_type = completions.metrics.render()
        return Response(body, media_type=content_type)

    app.add_middleware(HotPathMiddleware, routes={("POST", "/v1/feedback"): feedback_answer})
    if max_body_bytes is not None:
        from dataflywheel.serve.limits import BodyLimitMiddleware

        app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)
    if access is not None:
        from dataflywheel.serve.auth import AuthMiddleware

        for path, kind in (("/v1/health", "public"), ("/v1/ready", "public"), ("/v1/models", "read"),
                           ("/metrics", "read"), ("/openapi.json", "read"), ("/v1/chat/completions", "predict"),
                           ("/v1/completions", "predict"), ("/v1/feedback", "write")):
            access.register(path, kind)  # type: ignore[arg-type]
        missing = access.unregistered(app)
        if missing:
            raise RuntimeError(f"routes missing from the access matrix: {', '.join(missing)}")
        if access.auth.enabled:
            app.add_middleware(AuthMiddleware, matrix=access)
    endpoints = {getattr(r, "path", "") for r in app.routes}
    app.add_middleware(MetricsMiddleware, metrics=completions.metrics, endpoints=endpoints)
    return app
