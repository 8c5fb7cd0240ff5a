"""The predict pipeline, without a transport: parse -> validate -> redact -> forward -> log.

:class:`PredictPipeline` takes a JSON body (:meth:`~PredictPipeline.answer_json`) or records
(:meth:`~PredictPipeline.predict`) and returns the answers; the HTTP routes (``serve.app``,
``serve.hotpath``, ``serve.explain``) only move bytes in and out. The steps:

- parse: the body's JSON, one record (an object) or a list of them (``serve.requests``);
- validate: against the record model of the served model, read once per request, so a request
  runs to the end on the model it arrived with (a hot swap replaces ``model``);
- redact: the fields the model's bundle redacts, before anything is predicted, logged or explained;
- forward: through the :class:`~dataflywheel.serve.engine.Engine`, as a stream of events
  (:meth:`~PredictPipeline.stream`, or :meth:`~PredictPipeline.forward` for the answer alone);
  ``/v1/explain`` forwards through the explainer instead;
- log: where the engine produces the final result (its ``finish`` hook), each record gets a
  prediction id and a row in the prediction log; with ``log_mode: sync`` the answer waits for
  the row's commit, with ``async`` it does not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson

from dataflywheel.errors import FlywheelError
from dataflywheel.feedback.log import LogWriter, new_ids
from dataflywheel.serve.engine import Engine, EngineRequest, Event
from dataflywheel.serve.requests import logged_output, parse_json, split_records, validate_records
from dataflywheel.store.metadata import utcnow
from dataflywheel.workers import Done

if TYPE_CHECKING:
    from dataflywheel.serve.metrics import ServeMetrics
    from dataflywheel.serve.model import ServedModel


class RequestCancelled(FlywheelError):
    """A request's forward pass was cancelled before it gave an answer."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request after parse, validate and redact: ready to forward on ``model``."""

    model: ServedModel
    features: list[dict[str, Any]]
    single: bool
    """The body was one record (answer with one object, not a list)."""
    started: float
    """``time.perf_counter()`` when the request arrived (the logged latency runs from it)."""


class PredictPipeline:
    """Parse, validate, redact, forward through ``engine``, log with ``writer`` (module docstring).

    ``model`` is the served model; a hot swap assigns a new one. ``metrics`` (optional) counts
    redactions, predictions and failed asynchronous log writes.
    """

    def __init__(self, model: ServedModel, engine: Engine, writer: LogWriter, *,
                 log_mode: Literal["sync", "async"] = "sync", max_records: int = 1000,
                 metrics: ServeMetrics | None = None) -> None:
        self.model = model
        self.engine = engine
        self.writer = writer
        self.log_mode = log_mode
        self.max_records = max_records
        self.metrics = metrics
        self._explaining = asyncio.Lock()
        self.active = 0
        """Requests between the start of their forward step and their answer."""

    # -- parse, validate, redact -----------------------------------------------------------------
    def prepare(self, payload: Any, *, max_records: int | None = None, started: float | None = None) -> Prepared:
        """A parsed body (a record or a list of records) validated and redacted on the current model."""
        started = time.perf_counter() if started is None else started
        single = isinstance(payload, dict)
        records = split_records(payload, self.max_records if max_records is None else max_records)
        served = self.model  # read once: this request runs on this model to the end
        features = validate_records(served.record_model, records, single)
        if served.redactor is not None:
            features = self.redact(served, features)
        return Prepared(served, features, single, started)

    def redact(self, served: ServedModel, features: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``features`` with PII replaced where ``served`` redacts (counted in the metrics)."""
        features, counts = served.redact(features)
        if self.metrics is not None:
            for kind, n in counts.items():
                self.metrics.redactions.labels(kind).inc(n)
        return features

    # -- forward and log ---------------------------------------------------------------------------
    def request(self, prepared: Prepared, **options: Any) -> EngineRequest:
        """The engine request for ``prepared``, its ``finish`` hook the log step."""
        request = EngineRequest(prepared.model, prepared.features)
        request.finish = lambda out, done: self.log(prepared, out, done, inline=request.alone)
        if options:
            request.options = options
        return request

    async def stream(self, request: EngineRequest) -> AsyncIterator[Event]:
        """Forward ``request`` (from :meth:`request`; its ``id`` is what ``engine.cancel`` takes)
        through the engine and yield its events, the ``final`` one holding the logged answers
        (``{prediction_id, model_version, prediction, probabilities}`` each). Leaving the
        iteration early cancels the request in the engine."""
        ended = False
        try:
            async for event in self.engine.submit(request):
                ended = event.kind != "delta"
                if event.kind == "final" and self.metrics is not None:
                    self.metrics.predictions.inc(len(event.data))
                yield event
        finally:
            if not ended:
                self.engine.cancel(request.id)

    async def forward(self, prepared: Prepared) -> list[dict[str, Any]]:
        """The answers for ``prepared`` (deltas, if the engine streams, are skipped). The engine's
        stream is read directly (no generator in between: this is the hot path)."""
        request = self.request(prepared)
        ended = False
        self.active += 1
        try:
            # One turn of the loop first, so that requests that arrived with this one reach this
            # point too and the engine knows whether this one is alone (then it may skip its queue).
            await asyncio.sleep(0)
            request.alone = self.active == 1
            async for event in self.engine.submit(request):
                if event.kind == "delta":
                    continue
                ended = True
                if event.kind == "error":
                    raise event.data
                answers: list[dict[str, Any]] = event.data
                if self.metrics is not None:
                    self.metrics.predictions.inc(len(answers))
                return answers
        finally:
            self.active -= 1
            if not ended:  # cancelled, or the caller's task was: free the engine's slot
                self.engine.cancel(request.id)
        raise RequestCancelled("the request was cancelled before its answer", where="the model engine",
                               fix="send the request again")

    def log(self, prepared: Prepared, outputs: list[dict[str, Any]], done: Done, *, inline: bool = False) -> None:
        """The log step (the engine's ``finish`` hook, on its thread): name each output, queue
        its row, then ``done(answers, None)``: once committed in ``sync`` mode, at once in
        ``async``. Queues straight to the log writer, so a request costs one hop to the model
        thread, one to the writer and one back; a request that was ``inline`` (alone) commits
        here when the writer is idle. A batch's rows always go to the writer, whose group
        commit runs beside the next forward pass."""
        latency_ms = (time.perf_counter() - prepared.started) * 1000.0
        now = utcnow()
        answers = [{"prediction_id": pid, **out} for pid, out in zip(new_ids(len(outputs)), outputs, strict=True)]
        rows = [{"id": a["prediction_id"], "created_at": now, "model_version": out["model_version"],
                 "input": feat, "output": logged_output(out), "latency_ms": latency_ms}
                for a, feat, out in zip(answers, prepared.features, outputs, strict=True)]
        if self.log_mode == "sync":
            self.writer.submit_rows(rows, done, answers, inline=inline)
            return
        self.writer.submit_rows(rows, self._log_done)
        done(answers, None)

    def _log_done(self, _value: Any, exc: BaseException | None) -> None:
        if exc is not None and self.metrics is not None:
            self.metrics.log_failures.inc()

    # -- whole requests ----------------------------------------------------------------------------
    async def predict(self, payload: Any) -> Any:
        """Answers for a record (one answer) or a list of records (a list)."""
        prepared = self.prepare(payload)
        answers = await self.forward(prepared)
        return answers[0] if prepared.single else answers

    async def answer_json(self, body: bytes) -> bytes:
        """``/v1/predict``: a JSON body in, the JSON answer out."""
        started = time.perf_counter()
        prepared = self.prepare(parse_json(body), started=started)
        answers = await self.forward(prepared)
        return orjson.dumps(answers[0] if prepared.single else answers)

    async def explain_json(self, body: bytes, steps: int, max_records: int) -> bytes:
        """``/v1/explain``: parsed, validated and redacted as for a prediction, then explained
        (Integrated Gradients, ``steps``) on a worker thread, one request at a time; not logged."""
        from dataflywheel.explain import explain_records

        prepared = self.prepare(parse_json(body), max_records=max_records)
        async with self._explaining:
            answers = await asyncio.to_thread(explain_records, prepared.model.predictor, prepared.features, steps)
        answers = [{"model_version": prepared.model.version, **a} for a in answers]
        return orjson.dumps(answers[0] if prepared.single else answers, option=orjson.OPT_SERIALIZE_NUMPY)
