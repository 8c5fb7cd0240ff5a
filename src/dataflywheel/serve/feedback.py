"""``POST /v1/feedback``, one handler for both servers: the prediction server (labels, on its hot
path) and the generation server (thumbs, ratings, corrections, choices, comments on completions).

The event loop parses the body (:func:`~dataflywheel.serve.requests.parse_feedback`: one id, one
kind); the log writer's thread looks the prediction up, runs ``check`` (a
:class:`~dataflywheel.feedback.labels.FeedbackChecker`: the task of the prediction's model
version checks the value and redacts its free text), applies the idempotency key and commits,
then hands the answer back with one ``call_soon_threadsafe``. Answers: 201 ``{feedback_id,
prediction_id, kind, created}`` once committed (plus ``completion_id``, the same id, on the
generation server), 200 with the first id when the idempotency key was seen with the same
feedback, 404 for an unknown id, 409 for a key reused for other feedback, 422 naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request, Response

from dataflywheel.serve.hotpath import Answer, Handler, error_answer
from dataflywheel.serve.openapi import errors, json_body
from dataflywheel.serve.requests import parse_feedback
from dataflywheel.serve.schemas import FeedbackIn
from dataflywheel.workers import on_loop

if TYPE_CHECKING:
    from dataflywheel.feedback.log import Check, LogWriter

PATH = "/v1/feedback"
JSON_TYPE = "application/json"


def feedback_handler(writer: LogWriter, check: Check, *, completions: bool = False) -> Handler:
    """The hot-path :data:`~dataflywheel.serve.hotpath.Handler` of ``POST /v1/feedback``
    (module docstring); ``completions``: answers also name the id ``completion_id``."""

    async def answer(body: bytes, _headers: Mapping[str, str]) -> Answer:
        fb = parse_feedback(body)
        result = await on_loop(lambda done: writer.submit_feedback(
            fb.prediction_id, fb.value, done, kind=fb.kind, idempotency_key=fb.idempotency_key, check=check))
        out: dict[str, Any] = {"feedback_id": result.id, "prediction_id": fb.prediction_id}
        if completions:
            out["completion_id"] = fb.prediction_id
        out |= {"kind": fb.kind, "created": result.created}
        return 201 if result.created else 200, orjson.dumps(out)

    return answer


def add_feedback_route(app: FastAPI, handler: Handler) -> None:
    """Declare ``POST /v1/feedback`` on ``app`` (its OpenAPI entry, and the route an app without
    the hot-path layer answers with): ``handler``, its errors answered as the hot path answers them."""

    @app.post(PATH, status_code=201, openapi_extra=json_body(FeedbackIn.model_json_schema()),
              responses={200: {"description": "already recorded (same idempotency key, same feedback)"},
                         **errors(404, 409, 413, 422, 503, _404="no such prediction or completion",
                                  _409="idempotency key already used for other feedback",
                                  _422="invalid body, or feedback the predicting model's task refuses "
                                       "(a label outside its classes, a rating outside 1-5, ...)")})
    async def feedback(request: Request) -> Response:
        headers: Mapping[str, str] = {}
        try:
            status, content = await handler(await request.body(), request.headers)
        except Exception as exc:
            known = error_answer(exc)
            if known is None:
                raise
            status, detail, headers = known
            content = orjson.dumps(detail)
        return Response(content, status_code=status, media_type=JSON_TYPE, headers=dict(headers) or None)
