"""The engine interface: a toy streaming engine, defined here alone, plugged into the predict
pipeline (and into the server) without touching either. It admits requests into a fixed number
of slots and yields several ``delta`` events per request, then a ``final`` one, the way a
continuously batched generator will; the pipeline still validates, redacts and logs around it."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from dataflywheel.feedback.log import LogWriter, PredictionRow
from dataflywheel.privacy import Redactor
from dataflywheel.privacy.inputs import InputRedaction
from dataflywheel.serve.engine import EngineRequest, Event, EventStream, MicroBatchEngine
from dataflywheel.serve.pipeline import PredictPipeline
from dataflywheel.serve.requests import BadRequest
from dataflywheel.store import Project

from store_helpers import trained_example


class ToyStreamingEngine:
    """Runs at most ``slots`` requests at once, as tasks on the event loop; each emits ``steps``
    deltas (the text so far), then a final answer per record. Requests beyond the slots wait in
    arrival order; ``cancel`` stops a running one (or drops a waiting one) and frees its slot."""

    def __init__(self, slots: int = 1, steps: int = 3, step_s: float = 0.005) -> None:
        self.slots, self.steps, self.step_s = slots, steps, step_s
        self.free = slots
        self.waiting: deque[tuple[EngineRequest, EventStream]] = deque()
        self.running: dict[str, tuple[asyncio.Task[None], EventStream]] = {}
        self.started: list[str] = []
        self.seen: list[dict[str, Any]] = []
        self.cancelled: list[str] = []
        self._alive = False

    def submit(self, request: EngineRequest) -> EventStream:
        stream = EventStream(request.finish)
        self.waiting.append((request, stream))
        self._admit()
        return stream

    def cancel(self, request_id: str) -> bool:
        for i, (request, stream) in enumerate(self.waiting):
            if request.id == request_id:
                del self.waiting[i]
                stream.cancel()
                self.cancelled.append(request_id)
                return True
        entry = self.running.get(request_id)
        if entry is None:
            return False
        task, stream = entry
        task.cancel()
        stream.cancel()
        self._release(request_id)
        self.cancelled.append(request_id)
        return True

    def _admit(self) -> None:
        while self.free and self.waiting:
            request, stream = self.waiting.popleft()
            self.free -= 1
            self.started.append(request.id)
            self.running[request.id] = (asyncio.get_running_loop().create_task(self._generate(request, stream)), stream)

    def _release(self, request_id: str) -> None:
        if self.running.pop(request_id, None) is not None:
            self.free += 1
            self._admit()

    async def _generate(self, request: EngineRequest, stream: EventStream) -> None:
        try:
            steps = (request.options or {}).get("steps", self.steps)
            self.seen.extend(request.records)
            text = ""
            for i in range(steps):
                await asyncio.sleep(self.step_s)
                text += f"t{i} "
                stream.delta({"step": i, "text": text})
            version = request.model.version
            if hasattr(request.model, "forward"):  # a real served model: its answers, then ours
                outputs = request.model.forward(request.records)
            else:
                outputs = [{"model_version": version, "prediction": f"{r['note']} | {text.strip()}",
                            "probabilities": None} for r in request.records]
            stream.final(outputs)
        finally:
            self._release(request.id)

    def start(self) -> ToyStreamingEngine:
        self._alive = True
        return self

    def close(self, timeout: float = 10.0) -> None:
        self._alive = False

    @property
    def alive(self) -> bool:
        return self._alive

    def describe(self) -> dict[str, Any]:
        return {"slots": self.slots, "steps": self.steps}


class Note(BaseModel):
    x: float
    note: str


@dataclass(frozen=True)
class ToyModel:
    """What the pipeline needs of a served model: a record model, a redaction, a version."""

    version: int = 7
    record_model: type[BaseModel] = Note
    redaction: InputRedaction = field(default_factory=lambda: InputRedaction(Redactor(kinds=["email"]), ("note",)))

    @property
    def redactor(self) -> Any:
        return self.redaction.redactor

    def redact(self, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
        return self.redaction.records(records)


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[LogWriter]:
    project = Project.open(tmp_path / "store")
    with LogWriter(project.metadata) as w:
        yield w
    project.close()


def pipeline(engine: Any, writer: LogWriter) -> PredictPipeline:
    return PredictPipeline(ToyModel(), engine, writer, log_mode="sync")


RAW = {"x": 1.5, "note": "mail ann@example.com now"}


def test_a_streaming_engine_yields_deltas_then_the_logged_answer(writer: LogWriter) -> None:
    engine = ToyStreamingEngine(steps=3).start()
    pipe = pipeline(engine, writer)

    async def main() -> tuple[list[Event], list[bool]]:
        events = []
        async for event in pipe.stream(pipe.request(pipe.prepare([RAW, {**RAW, "x": 2}]))):
            events.append(event)
        committed = [writer.prediction(a["prediction_id"]) is not None for a in events[-1].data]
        return events, committed

    events, committed = asyncio.run(main())
    assert [e.kind for e in events] == ["delta", "delta", "delta", "final"]
    assert [e.data["text"] for e in events[:3]] == ["t0 ", "t0 t1 ", "t0 t1 t2 "]
    answers = events[-1].data
    assert [a["prediction"] for a in answers] == ["mail [email] now | t0 t1 t2"] * 2  # redacted before the engine
    assert committed == [True, True]  # sync log mode: the rows exist when the final event arrives
    row = writer.prediction(answers[0]["prediction_id"])
    assert row is not None and row.model_version == 7 and row.input == {"x": 1.5, "note": "mail [email] now"}
    assert all("ann@example.com" not in str(r) for r in engine.seen)
    assert engine.free == 1 and not engine.running


def test_forward_skips_the_deltas_and_validation_fails_before_the_engine(writer: LogWriter) -> None:
    engine = ToyStreamingEngine(steps=4).start()
    pipe = pipeline(engine, writer)

    async def main() -> Any:
        answer = await pipe.predict(RAW)
        with pytest.raises(BadRequest) as bad:
            await pipe.predict({"x": "not a number", "note": "hi"})
        return answer, bad.value

    answer, bad = asyncio.run(main())
    assert set(answer) == {"prediction_id", "model_version", "prediction", "probabilities"}
    assert answer["prediction"] == "mail [email] now | t0 t1 t2 t3"
    assert bad.status == 422 and bad.detail[0]["loc"] == ["body", "x"]
    assert len(engine.started) == 1 and writer.count(PredictionRow) == 1


def test_cancel_stops_the_stream_frees_the_slot_and_logs_nothing(writer: LogWriter) -> None:
    engine = ToyStreamingEngine(slots=1, steps=3, step_s=0.005).start()
    pipe = pipeline(engine, writer)

    async def main() -> tuple[list[str], list[str], list[str], Any]:
        slow = pipe.request(pipe.prepare({**RAW, "note": "slow"}), steps=10_000)
        queued = pipe.request(pipe.prepare({**RAW, "note": "queued"}))
        slow_events: list[str] = []
        first_delta = asyncio.Event()

        async def read_slow() -> None:
            async for event in pipe.stream(slow):
                slow_events.append(event.kind)
                first_delta.set()

        async def read_queued() -> list[Event]:
            return [e async for e in pipe.stream(queued)]

        slow_task = asyncio.create_task(read_slow())
        queued_task = asyncio.create_task(read_queued())
        await asyncio.wait_for(first_delta.wait(), 5)
        waiting_before = [r.id for r, _ in engine.waiting]
        assert engine.cancel(slow.id) and not engine.cancel(slow.id)  # a second cancel finds nothing
        await asyncio.wait_for(slow_task, 5)
        after_cancel = len(slow_events)
        queued_events = await asyncio.wait_for(queued_task, 5)
        await asyncio.sleep(0.05)  # the cancelled generator would have yielded again by now
        assert len(slow_events) == after_cancel
        # Leaving a stream early cancels its request too (a client that went away).
        left = pipe.stream(pipe.request(pipe.prepare({**RAW, "note": "left"}), steps=10_000))
        assert (await left.__anext__()).kind == "delta"
        await left.aclose()
        return slow_events, waiting_before, [e.kind for e in queued_events], queued_events[-1].data

    slow_events, waiting_before, queued_kinds, queued_answer = asyncio.run(main())
    assert slow_events and set(slow_events) == {"delta"}  # no final, no error: the stream just ended
    assert len(waiting_before) == 1  # the queued request waited for the one slot...
    assert queued_kinds == ["delta", "delta", "delta", "final"]  # ...and got it on the cancel
    assert queued_answer[0]["prediction"] == "queued | t0 t1 t2"
    assert len(engine.cancelled) == 2 and engine.free == 1 and not engine.running and not engine.waiting
    assert writer.count(PredictionRow) == 1  # only the request that finished was logged


def test_the_micro_batcher_engine_drops_a_cancelled_request_before_its_forward_pass() -> None:
    calls: list[list[Any]] = []
    entered, gate = threading.Event(), threading.Event()

    @dataclass(frozen=True)
    class Doubler:
        version: int = 1

        def forward(self, records: list[dict[str, Any]], _truncated: Any = None) -> list[dict[str, Any]]:
            calls.append([r["x"] for r in records])
            entered.set()
            gate.wait(5)  # holds the batcher's thread while the next requests queue
            return [{"model_version": 1, "prediction": 2 * r["x"], "probabilities": None} for r in records]

    engine = MicroBatchEngine(max_batch_size=8, max_wait_ms=50).start()
    model = Doubler()

    async def main() -> tuple[list[Event], list[Event], list[Event]]:
        blocker = engine.submit(EngineRequest(model, [{"x": 0}]))
        assert await asyncio.to_thread(entered.wait, 5)
        kept, dropped = EngineRequest(model, [{"x": 1}, {"x": 2}]), EngineRequest(model, [{"x": 3}])
        kept_stream, dropped_stream = engine.submit(kept), engine.submit(dropped)  # queued behind the blocker
        assert engine.cancel(dropped.id)
        gate.set()
        return [e async for e in blocker], [e async for e in kept_stream], [e async for e in dropped_stream]

    try:
        _, kept_events, dropped_events = asyncio.run(main())
    finally:
        engine.close()
    assert [(e.kind, [o["prediction"] for o in e.data]) for e in kept_events] == [("final", [2, 4])]
    assert dropped_events == [] and calls == [[0], [1, 2]] and not engine._inflight


# -- plugged into the server ------------------------------------------------------------------

@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_example(tmp_path_factory.mktemp("serve-engine"), epochs=2)


def test_the_server_predicts_and_logs_through_a_plugged_engine(project: Path) -> None:
    import polars as pl

    from dataflywheel.serve.app import create_app

    test = pl.read_parquet(next((project / ".flywheel" / "artifacts" / "datasets").iterdir()) / "test.parquet")
    record = test.drop("target").row(0, named=True)
    engine = ToyStreamingEngine(slots=2, steps=2)
    app = create_app(project, engine=engine)

    async def main() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            async with app.router.lifespan_context(app):
                return (await client.post("/v1/predict", json=record), await client.get("/v1/model"),
                        await client.get("/v1/ready"))

    predicted, described, ready = asyncio.run(main())
    answer = predicted.json()
    assert predicted.status_code == 200 and answer["model_version"] == 1 and set(answer["probabilities"]) == {"0", "1"}
    assert described.json()["batching"] == {"slots": 2, "steps": 2} and ready.status_code == 200
    assert len(engine.started) == 1 and not engine.alive  # the lifespan started and closed it
    logged = app.state.server.writer.prediction(answer["prediction_id"])
    assert logged is not None and logged.output["prediction"] == answer["prediction"]
