"""The two hot endpoints as a tiny pure-ASGI layer, and the error answers every endpoint shares.

``POST /v1/predict`` and ``POST /v1/feedback`` carry the traffic. :class:`HotPathMiddleware`
answers them straight from the ASGI messages, skipping FastAPI's routing, request objects,
dependency solving and exception middleware (a few hundred microseconds a request: a visible
share of a ~1 ms request). The FastAPI routes of the same paths stay declared, for the OpenAPI
docs and for an app mounted without this layer, and call the same handlers, so both ways answer
byte for byte alike. The middleware sits inside the metrics, access-matrix and body-limit
layers, so 401/403s, 413s and Prometheus counts are unchanged; an unexpected error still
propagates to Starlette's server-error middleware (a 500).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from fastapi import HTTPException

from dataflywheel.errors import FlywheelError, NotFoundError, StoreError
from dataflywheel.feedback.log import IdempotencyConflict
from dataflywheel.serve.asgi import ASGIApp, Receive, Scope, Send, send_json
from dataflywheel.serve.pipeline import RequestCancelled
from dataflywheel.serve.requests import BadRequest
from dataflywheel.workers import WorkerClosed

Answer = tuple[int, bytes]
"""(status, JSON body)."""
Handler = Callable[[bytes, Mapping[str, str]], Awaitable[Answer]]
"""``handler(body, headers)`` (header names in lower case) -> the answer; may raise any of the
errors :func:`error_answer` knows."""


def status_of(exc: FlywheelError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, IdempotencyConflict):
        return 409
    if isinstance(exc, (WorkerClosed, RequestCancelled, StoreError)):
        return 503
    return 422


def error_answer(exc: Exception) -> tuple[int, dict[str, Any], Mapping[str, str]] | None:
    """(status, JSON body, extra headers) for the errors endpoints answer themselves, else None."""
    if isinstance(exc, BadRequest):
        return exc.status, {"detail": exc.detail}, {}
    if isinstance(exc, FlywheelError):
        body = {"detail": exc.headline(), "error": type(exc).__name__, "where": exc.where, "fix": exc.fix}
        return status_of(exc), body, {}
    if isinstance(exc, HTTPException):
        return exc.status_code, {"detail": exc.detail}, exc.headers or {}
    return None


class HotPathMiddleware:
    """Answer ``(method, path)`` pairs in ``routes`` directly; pass everything else on."""

    def __init__(self, app: ASGIApp, routes: Mapping[tuple[str, str], Handler]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.routes.get((scope.get("method", ""), scope.get("path", ""))) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        extra: Mapping[str, str] = {}
        try:
            body = await _read_body(receive)
            if body is None:  # the client went away
                return
            status, content = await handler(body, headers)
        except Exception as exc:
            known = error_answer(exc)
            if known is None:
                raise
            status, detail, extra = known
            content = orjson.dumps(detail)
        await send_json(send, status, content, [(k.lower().encode("latin-1"), v.encode("latin-1"))
                                                for k, v in extra.items()])


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
