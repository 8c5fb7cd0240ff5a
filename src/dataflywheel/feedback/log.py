"""The prediction and feedback log, written by one group-commit thread.

Two tables on the metadata store's :class:`~dataflywheel.store.metadata.Base`: ``predictions``
(one row per served record: input, output, model version, latency) and ``feedback`` (true
labels sent back later, keyed to a prediction, optionally with a unique idempotency key).

All writes go through :class:`LogWriter`: callers queue an *operation* (a function of a
session) and get a :class:`concurrent.futures.Future` that completes only once the operation's
rows are committed. The writer thread takes everything queued, runs it in ONE transaction and
commits once (group commit), so a burst of requests costs one fsync, not one each. Being the
only writer also makes the idempotency check race-free within a process.

Contract for an operation: it may raise a :class:`FlywheelError` to reject its request, but
only *before* it adds anything to the session; the rest of the group still commits. If the
commit itself fails (or an operation raises anything else), the group is rolled back and each
operation is replayed in its own transaction, so one bad row fails only its own caller.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from dataflywheel.errors import FlywheelError, NotFoundError, StoreError
from dataflywheel.store.metadata import Base, MetadataStore, utcnow

Operation = Callable[[Session], Any]


class PredictionRow(Base):
    """One served record: what came in, what went out, from which model version."""

    __tablename__ = "predictions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """uuid4 hex, returned to the client as ``prediction_id``."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    model_version: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    output: Mapped[dict[str, Any]] = mapped_column(JSON)
    latency_ms: Mapped[float] = mapped_column(Float)


class FeedbackRow(Base):
    """A true outcome for a prediction (``kind`` ``label``: ``value`` is ``{"label": ...}``)."""

    __tablename__ = "feedback"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)


TABLES = [Base.metadata.tables["predictions"], Base.metadata.tables["feedback"]]


class IdempotencyConflict(StoreError):
    """An idempotency key was reused for a different request."""


class WriterClosed(StoreError):
    """The log writer is stopped; nothing more can be queued."""


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class PredictionRecord:
    """A prediction row to log; ``id`` is chosen by the caller (it is returned to the client)."""

    id: str
    model_version: int | None
    input: dict[str, Any]
    output: dict[str, Any]
    latency_ms: float


@dataclass
class FeedbackResult:
    id: str
    created: bool
    """False when an earlier request with the same idempotency key already recorded it."""


_STOP = object()


class LogWriter:
    """The group-commit writer thread over a :class:`MetadataStore` (see the module docstring).

    ``max_group`` bounds the operations in one transaction. ``group_sizes`` records the size of
    every committed group (for tests and metrics); ``commits`` counts transactions.
    """

    def __init__(self, store: MetadataStore, *, max_group: int = 1024) -> None:
        self.store = store
        self.max_group = max_group
        self.group_sizes: list[int] = []
        self.commits = 0
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()
        Base.metadata.create_all(store.engine, tables=TABLES)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Self:
        with self._lock:
            if self._thread is None:
                self._closed = False
                self._thread = threading.Thread(target=self._run, name="flywheel-log-writer", daemon=True)
                self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting work, commit everything already queued, then stop the thread."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- queueing --------------------------------------------------------------------------
    def submit(self, op: Operation) -> Future[Any]:
        """Queue ``op``; the future holds its return value once its transaction has committed."""
        fut: Future[Any] = Future()
        with self._lock:
            if self._closed or self._thread is None:
                raise WriterClosed("the prediction log writer is not running", fix="start the writer first")
            self._queue.put((op, fut))
        return fut

    def log_predictions(self, records: list[PredictionRecord]) -> Future[list[str]]:
        """Insert prediction rows; the future holds their ids once committed."""
        records = list(records)

        def op(session: Session) -> list[str]:
            # Rows are built inside the op: a replay after a failed group needs fresh ones.
            session.add_all([PredictionRow(id=r.id, model_version=r.model_version, input=r.input,
                                           output=r.output, latency_ms=r.latency_ms) for r in records])
            return [r.id for r in records]

        return self.submit(op)

    def record_feedback(
        self,
        prediction_id: str,
        value: Any,
        *,
        kind: str = "label",
        idempotency_key: str | None = None,
        check: Callable[[PredictionRow, Any], Any] | None = None,
    ) -> Future[FeedbackResult]:
        """Record feedback for a logged prediction.

        Raises (through the future) :class:`NotFoundError` for an unknown prediction id and
        :class:`IdempotencyConflict` when ``idempotency_key`` was used for other feedback.
        ``check(prediction_row, value)`` may normalise ``value`` or raise a FlywheelError.
        A repeated key returns the first request's id with ``created=False``.
        """

        def op(session: Session) -> FeedbackResult:
            if idempotency_key is not None:
                prior = session.scalar(select(FeedbackRow).where(FeedbackRow.idempotency_key == idempotency_key))
                if prior is not None:
                    if prior.prediction_id != prediction_id or prior.kind != kind:
                        raise IdempotencyConflict(
                            "idempotency key already used for feedback on another prediction",
                            where=f"idempotency_key {idempotency_key!r}", fix="use a new key for new feedback")
                    return FeedbackResult(prior.id, created=False)
            prediction = session.get(PredictionRow, prediction_id)
            if prediction is None:
                raise NotFoundError(f"no prediction {prediction_id!r}", where="prediction_id",
                                    fix="send the prediction_id returned by /v1/predict")
            stored = check(prediction, value) if check is not None else value
            row = FeedbackRow(id=new_id(), prediction_id=prediction_id, kind=kind, value={kind: stored},
                              idempotency_key=idempotency_key)
            session.add(row)
            return FeedbackResult(row.id, created=True)

        return self.submit(op)

    # -- the writer thread -----------------------------------------------------------------
    def _run(self) -> None:
        stop = False
        while not stop:
            group = [self._queue.get()]
            while len(group) < self.max_group:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(item is _STOP for item in group):
                stop = True
                group = [item for item in group if item is not _STOP]
                while True:  # drain what was queued before close()
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not _STOP:
                        group.append(item)
            if group:
                self._commit_group(group)

    def _commit_group(self, group: list[tuple[Operation, Future[Any]]]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self.store.transaction() as session:
                for op, _fut in group:
                    try:
                        outcomes.append((True, op(session)))
                    except FlywheelError as exc:
                        outcomes.append((False, exc))
        except Exception:  # noqa: BLE001 - any failure: replay alone, below
            # One operation (or the commit) failed: replay each alone so only the culprit fails.
            for item in group:
                self._commit_one(item)
            return
        self.commits += 1
        self.group_sizes.append(len(group))
        for (ok, value), (_op, fut) in zip(outcomes, group, strict=True):
            _settle(fut, ok, value)

    def _commit_one(self, item: tuple[Operation, Future[Any]]) -> None:
        op, fut = item
        try:
            with self.store.transaction() as session:
                value = op(session)
        except Exception as exc:  # noqa: BLE001 - handed to the caller's future
            _settle(fut, False, exc)
            return
        self.commits += 1
        self.group_sizes.append(1)
        _settle(fut, True, value)

    # -- reads -----------------------------------------------------------------------------
    def prediction(self, prediction_id: str) -> PredictionRow | None:
        with self.store.transaction() as s:
            return s.get(PredictionRow, prediction_id)

    def count(self, table: type[PredictionRow | FeedbackRow] = PredictionRow) -> int:
        with self.store.transaction() as s:
            return int(s.scalar(select(func.count()).select_from(table)) or 0)

    def feedback_for(self, prediction_id: str) -> list[FeedbackRow]:
        with self.store.transaction() as s:
            q = select(FeedbackRow).where(FeedbackRow.prediction_id == prediction_id).order_by(FeedbackRow.created_at)
            return list(s.scalars(q))


def _settle(fut: Future[Any], ok: bool, value: Any) -> None:
    if fut.set_running_or_notify_cancel():
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
