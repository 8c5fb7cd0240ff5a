"""The engine interface: what runs a request's records through a model and streams back events.

An :class:`Engine` takes an :class:`EngineRequest` (the validated, redacted records and the
model they were validated against) and returns the request's :class:`EventStream`, an async
iterator of :class:`Event`: any number of ``delta`` events (partial results: a generation's next
tokens), then one ``final`` event (the answer) or one ``error`` event (its exception).
``cancel(request_id)`` stops a request: its stream yields nothing more and ends, and the engine
gives its slot (a batch's room, a generation slot) to the next request.

The engine runs the model where it likes (a worker thread, a process, a GPU scheduler) and
feeds the stream from there: :meth:`EventStream.delta`, :meth:`EventStream.final`,
:meth:`EventStream.error` and :meth:`EventStream.done` are thread-safe. The caller's last steps
(naming the answers, logging them) are the request's ``finish`` hook, run by
:meth:`EventStream.final` on the thread that produced the result, so that a request costs one
hop per thread (model thread -> log writer -> event loop), not a detour through the event loop.

:class:`MicroBatchEngine` is today's engine: concurrent requests share one forward pass
(:class:`~dataflywheel.serve.batching.MicroBatcher`) and each gets one ``final`` event.
A continuously batched generator is another engine: it admits requests into free slots, emits a
``delta`` per step and a ``final`` at the end, and frees a slot on ``cancel``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self

from dataflywheel.serve.batching import MicroBatcher, Pending
from dataflywheel.workers import Done

if TYPE_CHECKING:
    from dataflywheel.serve.model import ServedModel

EventKind = Literal["delta", "final", "error"]
Finish = Callable[[Any, Done], None]
"""``finish(result, done)``: the caller's last steps on a request's final result, run on the
thread that produced it; ``done(answer, None)`` or ``done(None, exc)`` ends the stream."""

_REQUEST_IDS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Event:
    """One thing a request's stream yields: ``delta`` (a partial result), ``final`` (the answer,
    the last event) or ``error`` (``data`` is the exception; the last event)."""

    kind: EventKind
    data: Any = None


@dataclass(slots=True)
class EngineRequest:
    """Records to run on ``model`` (the served model they were validated against: a
    :class:`~dataflywheel.serve.model.ServedModel`, or a generation engine's
    :class:`~dataflywheel.serve.llm.generator.ServedGenerator`); ``options`` are the engine's
    per-request knobs (a generator's sampling, say); ``finish`` is the caller's hook on the final
    result; ``alone`` says no other request is in the pipeline with it (an engine may then skip its
    queue)."""

    model: Any
    records: list[dict[str, Any]]
    options: Mapping[str, Any] | None = None
    finish: Finish | None = None
    id: str = field(default_factory=lambda: f"r{next(_REQUEST_IDS)}")
    alone: bool = False


class Engine(Protocol):
    """What the predict pipeline forwards through (see the module docstring). ``submit`` and
    ``cancel`` are called on the event loop."""

    def submit(self, request: EngineRequest) -> AsyncIterator[Event]: ...

    def cancel(self, request_id: str) -> bool:
        """Stop ``request_id``; False when it is not in flight (finished or unknown)."""
        ...

    def start(self) -> object: ...

    def close(self, timeout: float = 10.0) -> None: ...

    @property
    def alive(self) -> bool: ...

    def describe(self) -> dict[str, Any]:
        """The engine's settings, for ``GET /v1/model``."""
        ...


class EventStream:
    """One request's events: fed from any thread, iterated on the event loop that made it.

    After a terminal event (``final`` or ``error``) or :meth:`cancel` the stream ends;
    ``on_end()`` is called once, on the loop, when it does (an engine forgets the request there).
    """

    __slots__ = ("_ended", "_events", "_loop", "_loop_thread", "_waiter", "finish", "on_end")

    def __init__(self, finish: Finish | None = None, on_end: Callable[[], object] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._events: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self.finish = finish
        self.on_end = on_end

    # -- producers: any thread -----------------------------------------------------------------
    def push(self, event: Event) -> None:
        if threading.get_ident() == self._loop_thread:  # an inline request: no wake-up to send
            self._put(event)
        else:
            self._loop.call_soon_threadsafe(self._put, event)

    def delta(self, data: Any) -> None:
        self.push(Event("delta", data))

    def final(self, data: Any) -> None:
        """The result: through the ``finish`` hook (here, on this thread) when there is one."""
        if self.finish is None:
            self.push(Event("final", data))
        else:
            try:
                self.finish(data, self.answer)
            except Exception as exc:  # noqa: BLE001 - the request fails, the engine's thread goes on
                self.error(exc)

    def error(self, exc: BaseException) -> None:
        self.push(Event("error", exc))

    def done(self, value: Any, exc: BaseException | None) -> None:
        """A :data:`~dataflywheel.workers.Done` for an engine's worker: ``final`` or ``error``."""
        if exc is None:
            self.final(value)
        else:
            self.error(exc)

    def answer(self, value: Any, exc: BaseException | None) -> None:
        """End the stream with ``value`` as it is (the ``finish`` hook's result) or ``exc``."""
        self.push(Event("final", value) if exc is None else Event("error", exc))

    # -- the loop's side -----------------------------------------------------------------------
    def cancel(self) -> None:
        """End the stream now (on the loop): events not yet taken are dropped."""
        self._events.clear()
        self._end()

    @property
    def ended(self) -> bool:
        return self._ended

    def _put(self, event: Event) -> None:
        if self._ended:
            return
        self._events.append(event)
        if event.kind != "delta":
            self._end()
        self._wake()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            if self.on_end is not None:
                self.on_end()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        while not self._events:
            if self._ended:
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._events.popleft()


Item = tuple["ServedModel", dict[str, Any]]
"""(the model a record was validated against, the record)."""


LONE_RECORDS = 4
"""Most records a request may hold to run inline (see :class:`MicroBatchEngine`)."""
LONE_BUDGET_S = 0.0005
"""Longest measured forward pass (seconds) that still runs inline on the event loop."""


class MicroBatchEngine:
    """Today's engine: one forward pass over the records of concurrent requests, on the
    batcher's thread; one ``final`` event per request (its records' outputs, in order).

    A request that arrives alone (``request.alone``, nothing in flight) with a few records, on a model whose
    small forward passes have been measured under ``lone_budget_s``, runs inline on the event
    loop instead: there is nothing to batch it with, and the two thread hops (to the batcher and
    back) cost more than such a forward pass. Concurrent requests still meet in the batcher.

    Requests validated against different models (a hot swap in flight) share a batch but each
    runs on its own model. ``on_truncated(n)`` hears how many texts a forward pass cut.
    """

    def __init__(self, *, max_batch_size: int = 64, max_wait_ms: float = 0.0,
                 on_batch: Callable[[int], None] | None = None,
                 on_truncated: Callable[[int], None] | None = None,
                 lone_budget_s: float = LONE_BUDGET_S) -> None:
        self.on_truncated = on_truncated
        self.on_batch = on_batch
        self.batcher: MicroBatcher[Item, dict[str, Any]] = MicroBatcher(
            self._timed_forward, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, on_batch=on_batch)
        self._inflight: dict[str, tuple[Pending[Item], EventStream]] = {}
        self.lone_budget_s = lone_budget_s
        self._small_cost: dict[int, deque[float]] = {}
        """Seconds of the recent small forward passes, per served model (by id); the fastest of
        them is the model's cost (a pass the machine preempted says nothing about the model)."""
        self.inline = 0
        """Requests that ran inline (for tests and metrics)."""

    def submit(self, request: EngineRequest) -> EventStream:
        rid, inflight = request.id, self._inflight
        stream = EventStream(request.finish, lambda: inflight.pop(rid, None))
        model = request.model
        items = [(model, r) for r in request.records]
        if request.alone and not inflight and self._lone_ok(model, len(items)):
            self.inline += 1
            try:
                outputs = self._timed_forward(items)
            except Exception as exc:  # noqa: BLE001 - the request fails, as on the batcher
                stream.error(exc)
                return stream
            self.batcher.batch_sizes.append(len(items))  # a forward pass like the batcher's
            if self.on_batch is not None:
                self.on_batch(len(items))
            stream.done(outputs, None)
            return stream
        pending = self.batcher.enqueue(items, stream.done)
        inflight[rid] = (pending, stream)
        return stream

    def _lone_ok(self, model: Any, n: int) -> bool:
        costs = self._small_cost.get(id(model))
        if not costs or n > LONE_RECORDS:
            return False
        return min(costs) <= self.lone_budget_s and self.batcher.alive

    def _timed_forward(self, items: list[Item]) -> list[dict[str, Any]]:
        started = time.perf_counter()
        out = self.forward(items)
        if len(items) <= LONE_RECORDS:
            first = items[0][0]
            costs = self._small_cost.get(id(first))
            if costs is None:
                if len(self._small_cost) > 8:  # models swapped out long ago
                    self._small_cost.clear()
                costs = self._small_cost[id(first)] = deque(maxlen=8)
            costs.append(time.perf_counter() - started)
        return out

    def cancel(self, request_id: str) -> bool:
        entry = self._inflight.pop(request_id, None)
        if entry is None:
            return False
        pending, stream = entry
        pending.cancel()
        stream.cancel()
        return True

    def forward(self, items: list[Item]) -> list[dict[str, Any]]:
        """One forward pass per model: each request runs on the model it was validated against,
        so requests in flight during a swap finish on the old one."""
        first = items[0][0]
        truncated = self.on_truncated
        if all(m is first for m, _ in items):
            return first.forward([r for _, r in items], truncated)
        out: list[dict[str, Any]] = [{}] * len(items)
        groups: dict[int, list[int]] = {}
        for i, (m, _) in enumerate(items):
            groups.setdefault(id(m), []).append(i)
        for idx in groups.values():
            model = items[idx[0]][0]
            for i, res in zip(idx, model.forward([items[i][1] for i in idx], truncated), strict=True):
                out[i] = res
        return out

    def start(self) -> Self:
        self.batcher.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        self.batcher.close(timeout)

    @property
    def alive(self) -> bool:
        return self.batcher.alive

    def describe(self) -> dict[str, Any]:
        return {"max_batch_size": self.batcher.max_batch_size, "max_wait_ms": self.batcher.max_wait_ms}
