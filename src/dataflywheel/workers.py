"""One base for the long-lived threads (the micro-batcher, the prediction log writer, its WAL
checkpointer, the alias watcher) and one completion type for the work they finish.

A :class:`Worker` is a daemon thread serving a queue: :meth:`~Worker.start`,
:attr:`~Worker.alive`, :meth:`~Worker.close` (stop accepting work, let the thread finish what
was queued, join it) and :meth:`~Worker.put` (queue an item; refused with the worker's
:class:`WorkerClosed` error once closed). A subclass writes the thread's loop, :meth:`Worker.run`,
over :meth:`~Worker.take` and :meth:`~Worker.take_nowait`, and sees :data:`STOP` when it is told
to close; a periodic worker waits between rounds with :meth:`Worker.wait`.

Work finishes through a :data:`Done` callback, ``done(value, None)`` or ``done(None, exc)``, called
once on the worker's thread, so the caller can chain the next step (a forward pass queues its log
write) without a hop back to the event loop. :func:`future_done` adapts one to a
:class:`concurrent.futures.Future`, :func:`on_loop` to an awaitable on an asyncio loop.

This module sits outside ``serve`` and ``feedback`` because both use it (feedback never imports
serve).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Self

from dataflywheel.errors import FlywheelError

log = logging.getLogger("dataflywheel.serve")

Done = Callable[[Any, BaseException | None], None]
"""``done(value, None)`` or ``done(None, exception)``: a queued piece of work's outcome, told once
on the worker's thread. It must return quickly and not raise (:func:`call_done` logs it if it does)."""

STOP: Any = object()
"""What :meth:`Worker.take` returns once the worker is told to close (after the items queued before)."""


class WorkerClosed(FlywheelError):
    """A worker thread is not running (the server is starting or shutting down)."""


class Worker(ABC):
    """A daemon thread with a queue (see the module docstring). ``name`` names the thread."""

    name = "flywheel-worker"

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = True

    def closed_error(self) -> FlywheelError:
        """What :meth:`put` raises when the worker is not running."""
        return WorkerClosed(f"{self.name} is not running", fix="retry once /v1/ready says ready")

    @abstractmethod
    def run(self) -> None:
        """The thread's loop: take items until :data:`STOP`. Subclasses write it."""

    def start(self) -> Self:
        with self._lock:
            if self._thread is None:
                self._closed = False
                self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
                self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting items, let the thread finish those already queued, then join it."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(STOP)
            thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def put(self, item: Any) -> None:
        """Queue ``item`` for the thread (thread-safe); raises :meth:`closed_error` when not running."""
        with self._lock:
            if self._closed or self._thread is None:
                raise self.closed_error()
            self._queue.put(item)

    # -- for the thread's loop -----------------------------------------------------------------
    def take(self, timeout: float | None = None) -> Any:
        """The next item (or :data:`STOP`), waiting at most ``timeout`` seconds (``queue.Empty``)."""
        return self._queue.get(timeout=timeout)

    def empty(self) -> bool:
        """Whether nothing is queued (a moment's answer: another thread may queue next)."""
        return self._queue.empty()

    def take_nowait(self) -> Any:
        """The next item already queued (or :data:`STOP`); ``queue.Empty`` when there is none."""
        return self._queue.get_nowait()

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` between rounds of a periodic worker; False once told to close."""
        try:
            return self._queue.get(timeout=seconds) is not STOP
        except queue.Empty:
            return True


def call_done(done: Done, value: Any, exc: BaseException | None) -> None:
    """Tell ``done`` the outcome; a failing callback is logged, never allowed to stop the thread."""
    try:
        done(value, exc)
    except Exception:  # noqa: BLE001 - a caller's callback must not stop the worker
        log.exception("a completion callback failed")


def future_done(fut: Future[Any]) -> Done:
    """A :data:`Done` that completes ``fut`` (unless it was cancelled)."""

    def done(value: Any, exc: BaseException | None) -> None:
        if fut.set_running_or_notify_cancel():
            if exc is None:
                fut.set_result(value)
            else:
                fut.set_exception(exc)

    return done


def settle_future(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    """Complete an asyncio future (on its loop) unless it was cancelled."""
    if not fut.done():
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)


async def on_loop(start: Callable[[Done], None]) -> Any:
    """Await work finished on another thread: ``start(done)`` hands ``done`` to the thread, and
    the outcome comes back to this event loop with one ``call_soon_threadsafe``."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def done(value: Any, exc: BaseException | None) -> None:
        loop.call_soon_threadsafe(settle_future, fut, value, exc)

    start(done)
    return await fut
