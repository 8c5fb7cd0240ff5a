"""A server for one generation model: the OpenAI-compatible routes over the continuously batched
engine, every completion logged by the prediction log's group-commit writer.

:func:`create_generation_app` takes a :class:`~dataflywheel.serve.llm.generator.ServedGenerator`
and a :class:`~dataflywheel.feedback.log.LogWriter`; the engine and the writer start and stop
with the app's lifespan. ``GET /v1/health``, ``GET /v1/ready`` and ``GET /metrics`` answer as
the classifier server's do (``serve.llm.metrics`` adds the generation instruments).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Response

from dataflywheel.feedback.log import LogWriter
from dataflywheel.serve.llm.completions import Completions
from dataflywheel.serve.llm.engine import CacheSettings, ContinuousBatchEngine
from dataflywheel.serve.llm.generator import ServedGenerator
from dataflywheel.serve.llm.routes import add_generation_routes
from dataflywheel.serve.metrics import MetricsMiddleware


def create_generation_app(generator: ServedGenerator, writer: LogWriter, *, cache: CacheSettings | None = None,
                          log_mode: Literal["sync", "async"] = "sync") -> FastAPI:
    engine = ContinuousBatchEngine(generator.model, generator.eos_ids, cache)
    completions = Completions(generator, engine, writer, log_mode=log_mode)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        writer.start()
        engine.start()
        try:
            yield
        finally:
            engine.close()
            writer.close()

    app = FastAPI(title="dataflywheel", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.completions = completions
    add_generation_routes(app, completions)

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/v1/ready")
    async def ready() -> Response:
        import orjson

        if not (engine.alive and writer.alive):
            return Response(orjson.dumps({"status": "not ready"}), status_code=503, media_type="application/json")
        return Response(orjson.dumps({"status": "ready", "model_version": generator.version}),
                        media_type="application/json")

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, content_type = completions.metrics.render()
        return Response(body, media_type=content_type)

    endpoints = {getattr(r, "path", "") for r in app.routes}
    app.add_middleware(MetricsMiddleware, metrics=completions.metrics, endpoints=endpoints)
    return app
