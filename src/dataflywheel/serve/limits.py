"""Request body size limit: a tiny ASGI middleware answering 413 with a JSON detail.

A declared ``Content-Length`` over the limit is refused before the body is read; a body
without one (chunked) is counted as it streams in, and reading past the limit raises a 413
:class:`~fastapi.HTTPException` inside the app, which answers it like any other HTTP error.
"""

from __future__ import annotations

import orjson
from fastapi import HTTPException

from dataflywheel.serve.asgi import ASGIApp, Message, Receive, Scope, Send, send_json


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _detail(self, size: int | None = None) -> str:
        got = f"{size} bytes" if size is not None else "more"
        return f"request body too large ({got}); the limit is {self.max_body_bytes} bytes (serve.max_body_bytes)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                if declared is not None and declared > limit:
                    await _reject(send, self._detail(declared))
                    return
                break
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counting_receive, send)


async def _reject(send: Send, detail: str) -> None:
    await send_json(send, 413, orjson.dumps({"detail": detail}), [(b"connection", b"close")])
