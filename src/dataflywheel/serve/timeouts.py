"""Receive timeouts for uvicorn: a client must send a request's headers, then its body, in time.

uvicorn closes a keep-alive connection that stays idle (``timeout_keep_alive``) but waits
forever on a client that opened a connection and sends its headers, or its body, a byte at a
time: a few dozen such sockets hold a server's connections. :func:`timed_protocol` makes a
subclass of uvicorn's HTTP protocol (httptools or h11, as uvicorn picks) with two deadlines:

- ``header_timeout_s``: from the connection's opening, or from the first byte of each next
  request on a kept-alive connection, until the request's headers are complete;
- ``body_timeout_s``: from the headers until the request's body is complete.

Past a deadline the server answers 408 (JSON detail, ``connection: close``) when no response
has started, and closes the connection. Nothing is timed while the application works or
sends its response, so a long-lived streaming response is never cut.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import orjson

PHASE_HEADERS = "headers"
PHASE_BODY = "body"


class _Cycle(Protocol):
    """What the timers read of uvicorn's request/response cycle (h11's and httptools' alike)."""

    response_started: bool
    response_complete: bool
    more_body: bool


class ReceiveTimeouts:
    """Mixed in before a uvicorn HTTP protocol class (see :func:`timed_protocol`)."""

    header_timeout_s: float | None = None
    body_timeout_s: float | None = None
    # set by uvicorn's protocol: transport, loop, cycle (the current request/response)
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: _Cycle | None

    # The base protocol class is picked at run time (timed_protocol), so mypy sees no method for
    # these super() calls: hence their ignores.
    def connection_made(self, transport: asyncio.Transport) -> None:
        self._receive_timer: asyncio.TimerHandle | None = None
        self._receive_phase: str | None = None
        super().connection_made(transport)  # type: ignore[misc]
        self._arm(PHASE_HEADERS)

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        if self._receive_phase is None and (before is None or before.response_complete):
            self._arm(PHASE_HEADERS)  # the first bytes of the next request on this connection
        super().data_received(data)  # type: ignore[misc]
        cycle = self.cycle
        if cycle is before and self._receive_phase == PHASE_HEADERS:
            return  # headers still incomplete
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            if self._receive_phase != PHASE_BODY:
                self._arm(PHASE_BODY)
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        self._disarm()  # the next request's headers are timed from its first byte
        super().on_response_complete()  # type: ignore[misc]

    # -- timers ------------------------------------------------------------------------------
    def _arm(self, phase: str) -> None:
        self._disarm()
        seconds = self.header_timeout_s if phase == PHASE_HEADERS else self.body_timeout_s
        if seconds is None:
            return
        self._receive_phase = phase
        self._receive_timer = self.loop.call_later(seconds, self._timed_out, phase, seconds)

    def _disarm(self) -> None:
        timer = getattr(self, "_receive_timer", None)
        if timer is not None:
            timer.cancel()
        self._receive_timer = None
        self._receive_phase = None

    def _timed_out(self, phase: str, seconds: float) -> None:
        self._receive_timer = None
        self._receive_phase = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            return  # the application answers already (perhaps streaming): never cut a response
        setting = "serve.header_timeout_s" if phase == PHASE_HEADERS else "serve.body_timeout_s"
        body = orjson.dumps({"detail": f"request {phase} not received within {seconds:g} s ({setting})"})
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
        self.transport.close()  # the application, if it waits for the body, hears a disconnect


def timed_protocol(header_timeout_s: float | None, body_timeout_s: float | None,
                   base: str | type[asyncio.Protocol] = "auto") -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol ``base`` (``auto``, ``httptools``, ``h11`` or a class) with the
    receive deadlines; pass it to ``uvicorn.run(..., http=...)``. ``None`` disables one."""
    if isinstance(base, str):
        from uvicorn.config import HTTP_PROTOCOLS
        from uvicorn.importer import import_from_string

        base = import_from_string(HTTP_PROTOCOLS[base])
    assert isinstance(base, type)
    return type(f"Timed{base.__name__}", (ReceiveTimeouts, base),
                {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s})
