"""The worker-thread base and its completion helpers."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future

import pytest

from dataflywheel.workers import STOP, Worker, WorkerClosed, call_done, future_done, on_loop


class Collector(Worker):
    name = "test-collector"

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.items: list[int] = []

    def run(self) -> None:
        self.gate.wait(5)
        while (item := self.take()) is not STOP:
            self.items.append(item)


def test_close_finishes_what_was_queued_then_refuses_more() -> None:
    gate = threading.Event()
    w = Collector(gate)
    with pytest.raises(WorkerClosed, match="test-collector is not running"):
        w.put(0)  # not started yet
    w.start()
    assert w.start() is w and w.alive  # a second start is a no-op
    for i in range(5):
        w.put(i)
    gate.set()
    w.close()
    assert w.items == [0, 1, 2, 3, 4] and not w.alive
    with pytest.raises(WorkerClosed):
        w.put(5)


def test_wait_returns_false_once_told_to_close() -> None:
    rounds: list[bool] = []

    class Ticker(Worker):
        def run(self) -> None:
            while self.wait(0.001):
                rounds.append(True)

    with Ticker() as t:
        while len(rounds) < 3:
            threading.Event().wait(0.001)
    assert not t.alive and len(rounds) >= 3


def test_completions_reach_a_future_and_the_event_loop(caplog: pytest.LogCaptureFixture) -> None:
    ok: Future[int] = Future()
    failed: Future[int] = Future()
    call_done(future_done(ok), 3, None)
    call_done(future_done(failed), None, ValueError("bad"))
    assert ok.result() == 3 and isinstance(failed.exception(), ValueError)

    def broken(_value: object, _exc: BaseException | None) -> None:
        raise RuntimeError("callback bug")

    with caplog.at_level(logging.ERROR, logger="dataflywheel.serve"):
        call_done(broken, 1, None)  # logged, not raised: a worker thread goes on
    assert "a completion callback failed" in caplog.text

    async def main() -> tuple[int, BaseException]:
        value = await on_loop(lambda done: threading.Thread(target=done, args=(7, None)).start())
        with pytest.raises(KeyError) as err:
            await on_loop(lambda done: threading.Thread(target=done, args=(None, KeyError("k"))).start())
        return value, err.value

    value, exc = asyncio.run(main())
    assert value == 7 and isinstance(exc, KeyError)
