"""Micro-batching: concurrent requests share one forward pass, run on a worker thread.

A request submits its items (records) and awaits a future. The worker thread takes the first
waiting request and every request already queued behind it. A request that is alone runs at
once (batching must cost nothing when there is no concurrency); when others were queued, the
worker keeps collecting until the batch holds ``max_batch_size`` items or ``max_wait_ms`` has
passed since the first one. Under load, requests pile up while a forward pass runs, so batches
form by themselves. ``fn`` runs once on all the batch's items and each request gets its slice. A request never straddles two batches; one larger
than ``max_batch_size`` runs alone. If a batch fails, its requests are re-run one by one so a
bad request fails only itself. The event loop never runs the model, so it keeps accepting
requests (and filling the next batch) while a forward pass is in progress.

Completion is a callback run on the worker thread (:meth:`MicroBatcher.enqueue`), so a caller
can chain the next step (the prediction log write) without a hop back to the event loop;
:meth:`~MicroBatcher.submit` (a future) and :meth:`~MicroBatcher.run` (awaitable) wrap it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from dataflywheel.errors import FlywheelError

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()
log = logging.getLogger("dataflywheel.serve")

Done = Callable[[list[Any] | None, BaseException | None], None]
"""``done(results, None)`` or ``done(None, exception)``, called once on the worker thread."""


class BatcherClosed(FlywheelError):
    """The batcher is not running (the server is starting or shutting down)."""


class MicroBatcher(Generic[T, R]):
    """Group concurrent ``submit`` calls into calls of ``fn(items) -> results`` (same length).

    ``batch_sizes`` holds the item count of recent forward passes (for tests); ``on_batch(size)``
    is called after each successful one (for metrics).
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 2.0,
        name: str = "flywheel-batcher",
        history: int = 10_000,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 (got {max_batch_size})")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0 (got {max_wait_ms})")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.name = name
        self.on_batch = on_batch
        self.batch_sizes: deque[int] = deque(maxlen=history)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = True

    def start(self) -> MicroBatcher[T, R]:
        with self._lock:
            if self._thread is None:
                self._closed = False
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting requests, finish the queued ones, stop the thread."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    def enqueue(self, items: Sequence[T], done: Done) -> None:
        """Queue ``items`` (thread-safe); ``done`` gets their results, in order, on the worker
        thread. It must be quick and must not raise (it runs between forward passes)."""
        with self._lock:
            if self._closed:
                raise BatcherClosed("the model worker is not running", fix="retry once /v1/ready says ready")
            self._queue.put((list(items), done))

    def submit(self, items: Sequence[T]) -> Future[list[R]]:
        """Queue ``items`` (thread-safe); the future holds their results, in order."""
        fut: Future[list[R]] = Future()

        def done(results: list[Any] | None, exc: BaseException | None) -> None:
            if fut.set_running_or_notify_cancel():
                if exc is None:
                    fut.set_result(results)  # type: ignore[arg-type]
                else:
                    fut.set_exception(exc)

        self.enqueue(items, done)
        return fut

    async def run(self, items: Sequence[T]) -> list[R]:
        """``enqueue`` from the event loop and await the results."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[R]] = loop.create_future()
        self.enqueue(items, lambda results, exc: loop.call_soon_threadsafe(settle_future, fut, results, exc))
        return await fut

    # -- the worker thread -------------------------------------------------------------------
    def _run(self) -> None:
        carry: Any = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is _STOP:
                return
            batch = [first]
            size = len(first[0])
            deadline = time.monotonic() + self.max_wait_ms / 1000.0
            while size < self.max_batch_size:
                remaining = deadline - time.monotonic()
                try:
                    if len(batch) > 1 and remaining > 0:  # concurrent traffic: wait for stragglers
                        item = self._queue.get(timeout=remaining)
                    else:  # alone (or out of time): take only what is already queued
                        item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP or size + len(item[0]) > self.max_batch_size:
                    carry = item
                    break
                batch.append(item)
                size += len(item[0])
            self._forward(batch)

    def _forward(self, batch: list[tuple[list[T], Done]]) -> None:
        items = [x for request, _ in batch for x in request]
        try:
            results = list(self.fn(items))
            if len(results) != len(items):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
        except Exception as exc:  # noqa: BLE001 - handed to the callers
            if len(batch) == 1:
                _call(batch[0][1], None, exc)
            else:
                for request in batch:
                    self._forward([request])
            return
        self.batch_sizes.append(len(items))
        if self.on_batch is not None:
            self.on_batch(len(items))
        start = 0
        for chunk, done in batch:
            _call(done, results[start : start + len(chunk)], None)
            start += len(chunk)


def settle_future(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    """Complete an asyncio future (on its loop) unless it was cancelled."""
    if not fut.done():
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)


def _call(done: Done, results: list[Any] | None, exc: BaseException | None) -> None:
    try:
        done(results, exc)
    except Exception:  # noqa: BLE001 - a caller's callback must not stop the worker
        log.exception("micro-batcher: a completion callback failed")
