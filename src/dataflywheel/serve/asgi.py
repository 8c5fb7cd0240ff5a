"""The ASGI types the pure-ASGI layers use (Starlette's aliases, named here once) and the one
JSON answer they send themselves (the hot path, the access matrix's 401/403, the body limit's 413).
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send", "send_json"]

_JSON = (b"content-type", b"application/json")


async def send_json(send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer with ``status`` and the JSON ``body``: content type, length, then ``headers``."""
    await send({"type": "http.response.start", "status": status,
                "headers": [_JSON, (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
