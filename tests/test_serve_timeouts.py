"""Receive timeouts: slow headers and slow bodies get a 408 and a closed socket; responses,
streaming ones included, and idle kept-alive connections are never cut by them."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_helpers import serving

from dataflywheel.serve.timeouts import timed_protocol

TIMEOUT = 0.5


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """POST /echo answers its body; GET /stream sends 6 chunks 0.2 s apart (longer than TIMEOUT)."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(6):
            await asyncio.sleep(0.2)
            await send({"type": "http.response.body", "body": f"chunk{i};".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(params=["httptools", "h11"])
def address(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    with serving(app, lifespan="off", http=timed_protocol(TIMEOUT, TIMEOUT, request.param),
                 timeout_keep_alive=5) as url:
        yield "127.0.0.1", int(url.rsplit(":", 1)[1])


def read_all(sock: socket.socket, limit: float = 5.0) -> tuple[bytes, float]:
    """Everything until the server closes the socket, and how long that took."""
    sock.settimeout(limit)
    started, chunks = time.monotonic(), []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks), time.monotonic() - started


def request(sock: socket.socket, data: bytes) -> bytes:
    """Send one request and read one content-length-framed response."""
    sock.sendall(data)
    sock.settimeout(5)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return head.split(b"\r\n")[0] + b" " + rest


def test_an_idle_new_connection_and_slow_headers_get_a_408(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as idle:
        answer, took = read_all(idle)
    assert answer.startswith(b"HTTP/1.1 408") and b"serve.header_timeout_s" in answer and took < 3
    with socket.create_connection(address) as slow:
        slow.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n")
        for _ in range(3):  # a header line every 0.3 s: never done within TIMEOUT
            time.sleep(0.3)
            try:
                slow.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
        answer, _ = read_all(slow)
    assert answer.startswith(b"HTTP/1.1 408"), answer


def test_a_slow_body_gets_a_408(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as slow:
        slow.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        answer, took = read_all(slow)
    assert answer.startswith(b"HTTP/1.1 408") and b"serve.body_timeout_s" in answer and took < 3


def test_streaming_responses_and_kept_alive_connections_are_not_cut(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer, took = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200") and took > 1.0
    assert all(b"chunk%d;" % i in answer for i in range(6)), answer
    with socket.create_connection(address) as sock:
        big = b"x" * 300_000
        echo = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        assert request(sock, echo) == b"HTTP/1.1 200 OK abc"
        time.sleep(3 * TIMEOUT)  # idle between requests: the keep-alive timeout (5 s) applies, not this one
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big)
        assert request(sock, head + big) == b"HTTP/1.1 200 OK " + big


def test_serve_passes_the_configured_timeouts_to_uvicorn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    import dataflywheel.serve.app as serve_app
    from dataflywheel.serve import serve

    (tmp_path / "flywheel.yaml").write_text(
        "data: {source: d.csv, target: y}\nserve: {header_timeout_s: 3, body_timeout_s: 4.5}\n")
    seen: dict[str, Any] = {}
    monkeypatch.setattr(serve_app, "create_app", lambda *a, **k: "app")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    monkeypatch.setattr("dataflywheel.serve.check_port", lambda *_: None)
    serve(tmp_path / "flywheel.yaml")
    protocol = seen["http"]
    assert seen["app"] == "app" and (protocol.header_timeout_s, protocol.body_timeout_s) == (3.0, 4.5)
