"""The prediction server: a FastAPI app over one model alias and the prediction log.

Endpoints (JSON in and out, rendered with orjson):

- ``POST /v1/predict``: one record (object -> object) or a list of records (list -> list);
  each answer is ``{prediction_id, model_version, prediction, probabilities}``. Records are
  validated against a model generated from the bundle's schema (422 naming the field) and run
  through the micro-batcher. ``log_mode: sync`` (default) answers only after the prediction
  rows are committed by the group-commit writer; ``async`` answers at once, and a crash (or
  kill -9) can then lose the rows not yet committed: those queued plus the group being written,
  in practice the last few milliseconds of traffic.
- ``POST /v1/feedback``: ``{prediction_id, label, idempotency_key?}`` -> 201 ``{feedback_id}``
  once committed (200 with the same id when the key was seen before); 404 unknown prediction,
  422 label outside the predicting model's classes, 409 key reused for another prediction or label.
- ``POST /v1/explain``: attributions for one record or a list (``serve.explain``).
- ``POST /v1/admin/reload``: check the alias now and swap if it moved (see ``serve.swap``).
- ``GET /v1/health`` (the process is up), ``GET /v1/ready`` (model loaded and workers running,
  else 503), ``GET /v1/model`` (version, alias, task, classes, schema, metrics),
  ``GET /v1/monitor`` (drift and live accuracy), ``GET /metrics`` (Prometheus).

Privacy: the record fields the model's bundle redacts (the ``privacy`` settings its training
data was redacted with; text columns by default) are redacted on the event loop right after
validation, before the record is predicted on, logged or explained (``ServedModel.redact``); the raw text is never stored. Counts per kind are in
``/metrics`` (``flywheel_redactions``), texts truncated to ``max_length`` too
(``flywheel_truncated_texts``).

Every route is in one access matrix (``serve.auth``): with ``FLYWHEEL_API_TOKEN`` set, feedback
and admin routes need the bearer token, reads (model, monitor, metrics, docs) too unless
``serve.auth.read: open``, predictions only with ``serve.auth.predict: token``; bodies over
``max_body_bytes`` get a 413 (``serve.limits``). Errors are ``{"detail": ...}``: a
:class:`FlywheelError` gives its one-line headline (plus ``where``/``fix``), a validation error
gives the list of ``{loc, msg, type}``.

The hot path (``/v1/predict``, ``/v1/feedback``, answered by ``serve.hotpath``): the event loop
parses and validates, the model thread runs the forward pass and queues the log write itself,
the writer thread commits and hands the answer back with one ``call_soon_threadsafe``; no
request waits on another thread more than once per step, and nothing on the loop blocks.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from dataflywheel.config import AuthConfig, Backend, FlywheelConfig, ServeConfig
from dataflywheel.errors import ConfigError, FlywheelError
from dataflywheel.feedback.log import LogWriter, new_ids
from dataflywheel.serve.auth import AccessMatrix, AuthMiddleware, BearerAuth
from dataflywheel.serve.batching import Done, MicroBatcher, settle_future
from dataflywheel.serve.docs import add_docs_routes
from dataflywheel.serve.explain import add_explain_route
from dataflywheel.serve.hotpath import Answer, HotPathMiddleware, error_answer
from dataflywheel.serve.limits import BodyLimitMiddleware
from dataflywheel.serve.metrics import MetricsMiddleware, ServeMetrics
from dataflywheel.serve.model import ServedModel, load_served_model
from dataflywheel.serve.openapi import document_access, errors, json_body, records_body
from dataflywheel.serve.requests import (
    MAX_ERRORS,
    BadRequest,
    LabelError,
    check_label,
    logged_output,
    parse_feedback,
    parse_json,
    split_records,
    validate_records,
)
from dataflywheel.serve.schemas import FeedbackIn
from dataflywheel.serve.swap import AliasWatcher
from dataflywheel.serve.worker import RetrainProcess
from dataflywheel.store.metadata import utcnow

__all__ = ["LabelError", "OrjsonResponse", "ServeSettings", "Server", "check_label", "config_path", "create_app"]
JSON_TYPE = "application/json"


class OrjsonResponse(JSONResponse):
    """JSON rendered by orjson (numpy scalars and arrays allowed)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass
class ServeSettings:
    """The server's knobs; :meth:`from_config` reads them from flywheel.yaml's ``serve`` section."""

    max_batch_size: int = 64
    """Most records in one forward pass."""
    max_wait_ms: float = 2.0
    """How long a batch with concurrent requests waits for more (a lone request never waits)."""
    max_records: int = 1000
    """Most records in one request (more is a 413)."""
    max_body_bytes: int = 1_048_576
    """Largest request body (more is a 413)."""
    log_mode: Literal["sync", "async"] = "sync"
    """sync: answer after the prediction rows are committed; async: answer at once."""
    swap_poll_seconds: float = 1.0
    """How often the alias is checked for a hot swap."""
    max_commit_group: int = 1024
    """Most log writes committed in one transaction."""
    threads: int | None = None
    """torch intra-op threads; None picks by model size (see dataflywheel.runtime)."""
    backend: Backend = "torch"
    """What runs the network: torch fp32, int8 dynamic quantisation, ONNX Runtime fp32 or int8."""
    device: str = "auto"
    """Where the torch backend runs (``serve.device``; see :func:`~dataflywheel.serve.model.serve_device`)."""
    auth: AuthConfig = field(default_factory=AuthConfig)
    """Which route classes need the bearer token when one is set (``serve.auth``, see ``serve.auth``)."""

    @classmethod
    def from_config(cls, serve: ServeConfig, **overrides: Any) -> ServeSettings:
        values = {f.name: getattr(serve, f.name) for f in fields(cls) if f.name in type(serve).model_fields}
        return cls(**(values | overrides))


Item = tuple[ServedModel, dict[str, Any]]


class Server:
    """What the app holds: the project, the served model, the batcher, the log writer, the
    alias watcher (hot swap), the metrics and, with auto-retrain, the retrain worker process."""

    def __init__(self, cfg: FlywheelConfig, alias: str, settings: ServeSettings,
                 retrain: RetrainProcess | None = None) -> None:
        from dataflywheel.loop import open_project

        self.cfg = cfg
        self.settings = settings
        self.alias = alias
        self.metrics = ServeMetrics()
        self.retrain = retrain
        self.project = open_project(cfg)
        try:
            self.model: ServedModel = load_served_model(self.project, alias, threads=settings.threads,
                                                        backend=settings.backend,
                                                        device=settings.device)
        except BaseException:
            self.project.close()
            raise
        self.metrics.model_version.set(self.model.version or 0)
        self.batcher: MicroBatcher[Item, dict[str, Any]] = MicroBatcher(
            self._forward, max_batch_size=settings.max_batch_size, max_wait_ms=settings.max_wait_ms,
            on_batch=self.metrics.batch_size.observe)
        self.writer = LogWriter(self.project.metadata, max_group=settings.max_commit_group)
        self.watcher: AliasWatcher[ServedModel] | None = None
        if not re.fullmatch(r"v?\d+", alias):  # a fixed version never moves
            self.watcher = AliasWatcher(self._alias_version, self._load, self._install, version=self.model.version,
                                        poll_seconds=settings.swap_poll_seconds,
                                        on_failure=lambda _v, _e: self.metrics.swap_failures.inc())

    # -- the model ---------------------------------------------------------------------------
    def _forward(self, items: list[Item]) -> list[dict[str, Any]]:
        """One forward pass per model: each request runs on the model it was validated against,
        so requests in flight during a swap finish on the old one."""
        first = items[0][0]
        truncated = self.metrics.truncated_texts.inc
        if all(m is first for m, _ in items):
            return first.forward([r for _, r in items], truncated)
        out: list[dict[str, Any]] = [{}] * len(items)
        groups: dict[int, list[int]] = {}
        for i, (m, _) in enumerate(items):
            groups.setdefault(id(m), []).append(i)
        for idx in groups.values():
            model = items[idx[0]][0]
            for i, res in zip(idx, model.forward([items[i][1] for i in idx], truncated), strict=True):
                out[i] = res
        return out

    def _alias_version(self) -> int | None:
        from dataflywheel.registry.versions import alias_version

        return alias_version(self.project, self.alias)

    def _load(self, version: int) -> ServedModel:
        return load_served_model(self.project, version, threads=self.settings.threads,
                                 backend=self.settings.backend, device=self.settings.device)

    def _install(self, model: ServedModel, version: int) -> None:
        self.model = model  # one reference assignment: atomic for every reader
        self.metrics.model_version.set(version)
        self.metrics.swaps.inc()

    def redact(self, served: ServedModel, features: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``features`` with PII replaced where ``served`` redacts (counted in /metrics)."""
        features, counts = served.redact(features)
        for kind, n in counts.items():
            self.metrics.redactions.labels(kind).inc(n)
        return features

    # -- predict: model, then log, then answer -------------------------------------------
    def predict(self, served: ServedModel, features: list[dict[str, Any]], started: float, done: Done) -> None:
        """Run ``features`` through the batcher on ``served``, log them, then ``done(answers, None)``
        (or ``done(None, exc)``), called on a worker thread: after the rows are committed in
        ``sync`` log mode, at once in ``async``. The forward pass's completion queues the log
        write directly, so a request costs one hop to the model thread, one to the writer and
        one back."""

        def after_forward(outputs: list[dict[str, Any]] | None, exc: BaseException | None) -> None:
            if outputs is None:
                done(None, exc)
                return
            latency_ms = (time.perf_counter() - started) * 1000.0
            now = utcnow()
            answers = [{"prediction_id": pid, **out} for pid, out in zip(new_ids(len(outputs)), outputs, strict=True)]
            rows = [{"id": a["prediction_id"], "created_at": now, "model_version": out["model_version"],
                     "input": feat, "output": logged_output(out), "latency_ms": latency_ms}
                    for a, feat, out in zip(answers, features, outputs, strict=True)]
            sync = self.settings.log_mode == "sync"
            try:
                self.writer.submit_rows(rows, (lambda ok, err: done(answers, None) if ok else done(None, err))
                                        if sync else self._log_done)
            except FlywheelError as err:
                done(None, err)
                return
            if not sync:
                done(answers, None)

        self.batcher.enqueue([(served, f) for f in features], after_forward)

    def _log_done(self, ok: bool, _value: Any) -> None:
        if not ok:
            self.metrics.log_failures.inc()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.writer.start()
        self.batcher.start()
        if self.watcher is not None:
            self.watcher.start()
        if self.retrain is not None:
            self.retrain.start()

    def close(self) -> None:
        if self.retrain is not None:
            self.retrain.stop()
        if self.watcher is not None:
            self.watcher.close()
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
) -> FastAPI:
    """An app serving the model ``alias`` (or a version, ``"3"``) of the project.

    ``project`` is a config, a flywheel.yaml path, or the folder holding it; ``settings``
    default to its ``serve`` section. The model is loaded here, so a missing alias or a damaged
    bundle fails now, as a :class:`FlywheelError`; the worker threads (batcher, log writer,
    alias watcher) and, with ``auto_retrain``, the retrain worker process start and stop with
    the app's lifespan. The bearer token is read from the environment now; every route is
    registered in the access matrix (``serve.auth``) as it is declared.
    """
    cfg = _config(project)
    retrain = RetrainProcess(config_path(project)) if auto_retrain else None
    server = Server(cfg, alias, settings or ServeSettings.from_config(cfg.serve), retrain)
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
    for path, kind in (("/v1/health", "public"), ("/v1/ready", "public"), ("/v1/model", "read"),
                       ("/v1/monitor", "read"), ("/metrics", "read"), ("/v1/predict", "predict"),
                       ("/v1/feedback", "write"), ("/v1/admin/*", "admin")):
        access.register(path, kind)  # type: ignore[arg-type]

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
            "batching": {"max_batch_size": server.batcher.max_batch_size, "max_wait_ms": server.batcher.max_wait_ms},
            "swap": {"follows_alias": watcher is not None, "last_error": watcher.last_error if watcher else None},
            "log_mode": server.settings.log_mode}

    async def predict_answer(body: bytes, _headers: Mapping[str, str]) -> Answer:
        started = time.perf_counter()
        payload = parse_json(body)
        single = isinstance(payload, dict)
        records = split_records(payload, server.settings.max_records)
        served = server.model  # read once: this request runs on this model to the end
        features = validate_records(served.record_model, records, single)
        if served.redactor is not None:
            features = server.redact(served, features)
        answers = await _on_loop(lambda done: server.predict(served, features, started, done))
        server.metrics.predictions.inc(len(answers))
        return 200, orjson.dumps(answers[0] if single else answers)

    async def feedback_answer(body: bytes, _headers: Mapping[str, str]) -> Answer:
        fb = parse_feedback(body)
        result = await _on_loop(lambda done: server.writer.submit_feedback(
            fb.prediction_id, fb.label, lambda ok, value: done(value, None) if ok else done(None, value),
            idempotency_key=fb.idempotency_key, check=check_label))
        answer = {"feedback_id": result.id, "prediction_id": fb.prediction_id, "created": result.created}
        return 201 if result.created else 200, orjson.dumps(answer)

    @app.post("/v1/predict", openapi_extra=records_body(server.model.record_model),
              responses=errors(400, 413, 422, 503))
    async def predict(request: Request) -> Response:
        status, content = await predict_answer(await request.body(), request.headers)
        return Response(content, status_code=status, media_type=JSON_TYPE)

    @app.post("/v1/feedback", status_code=201, openapi_extra=json_body(FeedbackIn.model_json_schema()),
              responses={200: {"description": "already recorded (same idempotency key, same feedback)"},
                         **errors(404, 409, 413, 422, 503, _409="idempotency key already used for other feedback",
                                  _422="invalid body, or a label the predicting model cannot give")})
    async def feedback(request: Request) -> Response:
        status, content = await feedback_answer(await request.body(), request.headers)
        return Response(content, status_code=status, media_type=JSON_TYPE)

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


async def _on_loop(start: Callable[[Done], None]) -> Any:
    """Await work finished on another thread: ``start(done)`` hands ``done`` to the thread, which
    calls ``done(value, None)`` or ``done(None, exc)``; the result comes back to this event loop
    with one ``call_soon_threadsafe``."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    start(lambda value, exc: loop.call_soon_threadsafe(settle_future, fut, value, exc))
    return await fut


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

