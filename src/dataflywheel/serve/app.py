"""The prediction server: a FastAPI app over one model alias and the prediction log.

Endpoints (JSON in and out, rendered with orjson):

- ``POST /v1/predict``: one record (object -> object) or a list of records (list -> list);
  each answer is ``{prediction_id, model_version, prediction, probabilities}``. Records are
  validated against a model generated from the bundle's schema (422 naming the field), run
  through the micro-batcher, and the answer is sent only after their prediction rows are
  committed by the group-commit writer.
- ``POST /v1/feedback``: ``{prediction_id, label, idempotency_key?}`` -> 201 ``{feedback_id}``
  once committed (200 with the same id when the key was seen before); 404 unknown prediction,
  422 label outside the predicting model's classes, 409 key reused for other feedback.
- ``GET /v1/health`` (the process is up), ``GET /v1/ready`` (model loaded and workers running,
  else 503), ``GET /v1/model`` (version, alias, task, classes, schema, metrics).

Errors are ``{"detail": ...}``: a :class:`FlywheelError` gives its one-line headline (plus
``where``/``fix``), a validation error gives the list of ``{loc, msg, type}``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from dataflywheel.config import FlywheelConfig
from dataflywheel.errors import DataError, FlywheelError, NotFoundError, StoreError
from dataflywheel.feedback.log import (
    IdempotencyConflict,
    LogWriter,
    PredictionRecord,
    PredictionRow,
    new_id,
)
from dataflywheel.serve.batching import BatcherClosed, MicroBatcher
from dataflywheel.serve.model import ServedModel, load_served_model
from dataflywheel.serve.schemas import FeedbackIn

MAX_ERRORS = 20


class OrjsonResponse(JSONResponse):
    """JSON rendered by orjson (numpy scalars and arrays allowed)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass
class ServeSettings:
    max_batch_size: int = 64
    """Most records in one forward pass."""
    max_wait_ms: float = 2.0
    """How long the first request of a batch waits for others to join it."""
    max_records: int = 1000
    """Most records in one request (more is a 413)."""
    max_commit_group: int = 1024
    """Most log writes committed in one transaction."""
    threads: int | None = None
    """torch intra-op threads; None picks by model size (see dataflywheel.runtime)."""


class Server:
    """What the app holds: the project, the served model, the batcher and the log writer."""

    def __init__(self, cfg: FlywheelConfig, alias: str, settings: ServeSettings) -> None:
        from dataflywheel.loop import open_project

        self.settings = settings
        self.alias = alias
        self.project = open_project(cfg)
        try:
            self.model: ServedModel = load_served_model(self.project, alias, threads=settings.threads)
        except BaseException:
            self.project.close()
            raise
        self.batcher: MicroBatcher[dict[str, Any], dict[str, Any]] = MicroBatcher(
            self._forward, max_batch_size=settings.max_batch_size, max_wait_ms=settings.max_wait_ms)
        self.writer = LogWriter(self.project.metadata, max_group=settings.max_commit_group)

    def _forward(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.model.forward(records)  # one read of self.model per batch: swap-safe

    def start(self) -> None:
        self.writer.start()
        self.batcher.start()

    def close(self) -> None:
        self.batcher.close()
        self.writer.close()
        self.project.close()

    def not_ready(self) -> list[str]:
        reasons = []
        if not self.batcher.alive:
            reasons.append("model worker not running")
        if not self.writer.alive:
            reasons.append("prediction log writer not running")
        return reasons


def _config(project: FlywheelConfig | str | Path) -> FlywheelConfig:
    from dataflywheel.loop import as_config

    if isinstance(project, (str, Path)) and Path(project).is_dir():
        project = Path(project) / "flywheel.yaml"
    return as_config(project)


def create_app(
    project: FlywheelConfig | str | Path = "flywheel.yaml",
    alias: str = "champion",
    settings: ServeSettings | None = None,
) -> FastAPI:
    """An app serving the model ``alias`` (or a version, ``"3"``) of the project.

    ``project`` is a config, a flywheel.yaml path, or the folder holding it. The model is loaded
    here, so a missing alias or a damaged bundle fails now, as a :class:`FlywheelError`; the
    worker threads start and stop with the app's lifespan.
    """
    server = Server(_config(project), alias, settings or ServeSettings())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        server.start()
        try:
            yield
        finally:
            server.close()

    app = FastAPI(title="dataflywheel", lifespan=lifespan, default_response_class=OrjsonResponse)
    app.state.server = server
    _add_error_handlers(app)

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/v1/ready")
    async def ready() -> Response:
        reasons = server.not_ready()
        if reasons:
            return OrjsonResponse({"status": "not ready", "reasons": reasons}, status_code=503)
        return OrjsonResponse({"status": "ready", "model_version": server.model.version})

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        return server.model.describe(alias=server.alias) | {
            "batching": {"max_batch_size": server.batcher.max_batch_size, "max_wait_ms": server.batcher.max_wait_ms}}

    @app.post("/v1/predict", openapi_extra=_predict_openapi(server.model.record_model))
    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        payload = _parse_json(await request.body())
        single = isinstance(payload, dict)
        records = _records(payload, server.settings.max_records)
        served = server.model
        features = _validate(served.record_model, records, single)
        outputs = await server.batcher.run(features)
        latency_ms = (time.perf_counter() - started) * 1000.0
        rows = [PredictionRecord(new_id(), out["model_version"], feat, _logged(out), latency_ms)
                for feat, out in zip(features, outputs, strict=True)]
        await asyncio.wrap_future(server.writer.log_predictions(rows))
        answers = [{"prediction_id": row.id, **out} for row, out in zip(rows, outputs, strict=True)]
        return OrjsonResponse(answers[0] if single else answers)

    @app.post("/v1/feedback", status_code=201, responses={200: {"description": "already recorded"}})
    async def feedback(body: FeedbackIn, response: Response) -> dict[str, Any]:
        fut = server.writer.record_feedback(body.prediction_id, body.label,
                                            idempotency_key=body.idempotency_key, check=check_label)
        result = await asyncio.wrap_future(fut)
        if not result.created:
            response.status_code = 200
        return {"feedback_id": result.id, "prediction_id": body.prediction_id, "created": result.created}

    return app


def _logged(output: dict[str, Any]) -> dict[str, Any]:
    return {"prediction": output["prediction"], "probabilities": output["probabilities"]}


class LabelError(DataError):
    """A feedback label the predicting model cannot have produced."""


def check_label(prediction: PredictionRow, label: Any) -> Any:
    """``label`` as stored: a class name of the model that made ``prediction``, or a number."""
    probabilities = (prediction.output or {}).get("probabilities")
    if probabilities is None:  # regression
        if isinstance(label, str):
            raise LabelError(f"label must be a number for a regression model (got {label!r})", where="label")
        return float(label)
    classes = list(probabilities)
    text = str(int(label)) if isinstance(label, float) and label.is_integer() else str(label)
    if text not in classes:
        raise LabelError(f"label {label!r} is not one of the model's classes {classes}", where="label",
                         fix="send one of the classes listed by /v1/model")
    return text


def _parse_json(body: bytes) -> Any:
    if not body:
        raise _BadRequest(400, "empty request body; send a JSON record or a list of records")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:  # NaN/Infinity are not JSON, but get a 422 naming the field rather than a parse error
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadRequest(400, f"malformed JSON: {exc}") from None


def _records(payload: Any, max_records: int) -> list[Any]:
    if isinstance(payload, dict):
        return [payload]
    if not isinstance(payload, list):
        raise _BadRequest(422, f"expected a JSON object (one record) or a list of records, got {type(payload).__name__}")
    if not payload:
        raise _BadRequest(422, "empty list of records; send at least one record")
    if len(payload) > max_records:
        raise _BadRequest(413, f"{len(payload)} records in one request; the limit is {max_records}")
    return payload


def _validate(model: type[BaseModel], records: list[Any], single: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        prefix: tuple[Any, ...] = ("body",) if single else ("body", i)
        if not isinstance(record, dict):
            errors.append({"loc": list(prefix), "msg": "a record must be a JSON object", "type": "model_type"})
            continue
        try:
            out.append(model.model_validate(record).model_dump())
        except ValidationError as exc:
            errors.extend({"loc": [*prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors())
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        raise _BadRequest(422, errors[:MAX_ERRORS])
    return out


class _BadRequest(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        self.status = status
        self.detail = detail


def _status(exc: FlywheelError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, IdempotencyConflict):
        return 409
    if isinstance(exc, (BatcherClosed, StoreError)):
        return 503
    return 422


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(_BadRequest)
    async def bad_request(_req: Request, exc: _BadRequest) -> Response:
        return OrjsonResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(FlywheelError)
    async def flywheel_error(_req: Request, exc: FlywheelError) -> Response:
        body = {"detail": exc.headline(), "error": type(exc).__name__, "where": exc.where, "fix": exc.fix}
        return OrjsonResponse(body, status_code=_status(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_req: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return OrjsonResponse({"detail": errors[:MAX_ERRORS]}, status_code=422)


def _predict_openapi(record: type[BaseModel]) -> dict[str, Any]:
    schema = record.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"anyOf": [schema, {"type": "array", "items": schema, "minItems": 1}]}}}}}
