"""``POST /v1/explain``: attributions for the served model's predictions.

The body is what ``/v1/predict`` takes (one record -> one answer, a list -> a list), parsed,
validated and redacted by the same pipeline steps
(:meth:`~dataflywheel.serve.pipeline.PredictPipeline.explain_json`); ``?steps=N`` (1-256,
default 32) sets the Integrated Gradients steps. Each answer is what
:func:`dataflywheel.explain.explain_records` returns for its record, plus ``model_version``.
Explanations are not logged (they are not predictions) and run one request at a time on a
worker thread, at most ``MAX_EXPLAIN_RECORDS`` records a request, so they cannot starve the
event loop or the prediction batcher of more than one core. They run on a private copy of the
model's module tree that shares its weights
(:func:`~dataflywheel.explain.attributions.private_copy`), so predictions served at the same
moment are never affected. Until :mod:`dataflywheel.explain` exists the endpoint answers 501
with a JSON detail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response

from dataflywheel.serve.openapi import errors, records_body
from dataflywheel.serve.requests import BadRequest

if TYPE_CHECKING:
    from dataflywheel.serve.auth import AccessMatrix
    from dataflywheel.serve.server import Server

MAX_EXPLAIN_RECORDS = 32
"""Most records in one explain request (each costs ``steps`` forward and backward passes)."""
MAX_STEPS = 256


def parse_steps(raw: str | None) -> int:
    if raw is None:
        return 32
    try:
        steps = int(raw)
    except ValueError:
        raise BadRequest(422, f"steps must be an integer (got {raw!r})") from None
    if not 1 <= steps <= MAX_STEPS:
        raise BadRequest(422, f"steps must be between 1 and {MAX_STEPS} (got {steps})")
    return steps


def add_explain_route(app: FastAPI, server: Server, access: AccessMatrix) -> None:
    """Declare ``POST /v1/explain`` on ``app`` (a ``predict`` route of ``access``), explaining
    with ``server``'s current model."""
    access.register("/v1/explain", "predict")
    openapi = records_body(server.model.record_model) | {"parameters": [{
        "name": "steps", "in": "query", "required": False,
        "description": f"Integrated Gradients steps (1-{MAX_STEPS}; more is slower and closer to exact)",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS, "default": 32}}]}

    @app.post("/v1/explain", openapi_extra=openapi, responses=errors(
        400, 413, 422, 501, _413=f"more than {MAX_EXPLAIN_RECORDS} records, or a body over serve.max_body_bytes",
        _422="a record fails validation, or steps is out of range", _501="explanations are not installed"))
    async def explain(request: Request) -> Response:
        try:
            import dataflywheel.explain  # noqa: F401 - the pipeline's explain step needs it
        except ImportError:
            raise BadRequest(501, "explanations are not available: dataflywheel.explain is missing") from None
        steps = parse_steps(request.query_params.get("steps"))
        body = await server.pipeline.explain_json(await request.body(), steps,
                                                  min(server.settings.max_records, MAX_EXPLAIN_RECORDS))
        return Response(body, media_type="application/json")
