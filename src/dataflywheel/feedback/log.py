"""The prediction and feedback log, written by one group-commit thread.

Two tables (:mod:`~dataflywheel.feedback.tables`): ``predictions`` (one row per served record:
input, output, model version, latency) and ``feedback`` (true labels sent back later, keyed to a
prediction, optionally with a unique idempotency key).

All writes go through :class:`LogWriter`. Callers queue work and learn its outcome only once
its rows are committed: through a :class:`concurrent.futures.Future` (``submit``,
``log_predictions``, ``record_feedback``) or, cheaper on a server's hot path, through a
:data:`~dataflywheel.workers.Done` callback run on the writer thread (``submit_rows``,
``submit_feedback``). The writer and the checkpointer are :class:`~dataflywheel.workers.Worker`
threads. The writer thread takes everything queued, runs it in ONE transaction on the
connection it holds and commits once (group commit), so a burst of requests costs one commit,
not one each.
Within a group, adjacent prediction writes become one executemany, and adjacent feedback
requests share one lookup of their predictions and idempotency keys and one insert
(:mod:`~dataflywheel.feedback.group_writes`). On SQLite the writer's connection never
checkpoints the WAL itself; :class:`~dataflywheel.feedback.wal.WalCheckpointer` does, beside it.
Being the only writer also makes the idempotency check race-free within a process; across
processes a clash on the unique key fails the group, which is then replayed and finds the other
process's row.

The tables are in :mod:`~dataflywheel.feedback.tables`, the ids in
:mod:`~dataflywheel.feedback.ids`; both are re-exported here.

Contract for an operation: it may raise a :class:`FlywheelError` to reject its request, but
only *before* it adds anything to the session; the rest of the group still commits. If the
commit itself fails (or an operation raises anything else), the group is rolled back and each
item is replayed in its own transaction, so one bad row fails only its own caller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Self

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from dataflywheel.errors import FlywheelError, StoreError
from dataflywheel.feedback.group_writes import (
    Check,
    FeedbackRequest,
    FeedbackResult,
    IdempotencyConflict,
    insert_predictions,
    record_feedback,
)
from dataflywheel.feedback.ids import new_id, new_ids
from dataflywheel.feedback.tables import FeedbackRow, PredictionRow, same_value
from dataflywheel.feedback.wal import RESTART_BYTES, WalCheckpointer
from dataflywheel.store.metadata import WAL_SIZE_LIMIT, MetadataStore, utcnow
from dataflywheel.workers import STOP, Done, Worker, WorkerClosed, call_done, future_done

__all__ = ["Check", "FeedbackResult", "FeedbackRow", "IdempotencyConflict", "LogWriter", "Operation",
           "PredictionRecord", "PredictionRow", "WriterClosed", "new_id", "new_ids", "same_value"]

Operation = Callable[[Session], Any]


class WriterClosed(StoreError, WorkerClosed):
    """The log writer is stopped; nothing more can be queued."""


@dataclass
class PredictionRecord:
    """A prediction row to log; ``id`` is chosen by the caller (it is returned to the client)."""

    id: str
    model_version: int | None
    input: dict[str, Any]
    output: dict[str, Any]
    latency_ms: float



@dataclass(slots=True)
class _Op:
    op: Operation
    done: Done


@dataclass(slots=True)
class _Rows:
    rows: list[dict[str, Any]]
    done: Done
    result: Any


_Item = _Op | _Rows | FeedbackRequest


class LogWriter(Worker):
    """The group-commit writer thread over a :class:`MetadataStore` (see the module docstring).

    ``max_group`` bounds the items in one transaction. ``group_sizes`` records the size of
    every committed group (for tests and metrics); ``commits`` counts transactions.
    """

    name = "flywheel-log-writer"

    def __init__(self, store: MetadataStore, *, max_group: int = 1024, checkpoint_seconds: float = 1.0,
                 wal_limit_bytes: int = WAL_SIZE_LIMIT, wal_restart_bytes: int = RESTART_BYTES) -> None:
        super().__init__()
        self.store = store
        self.max_group = max_group
        self.checkpoint_seconds = checkpoint_seconds
        self.wal_limit_bytes = wal_limit_bytes
        self._sqlite = store.engine.dialect.name == "sqlite"
        self._committing = threading.Lock()
        """Held while a group commits, on the writer thread or inline (and by the checkpointer's
        short step that lets the WAL start over)."""
        self._checkpointer = (WalCheckpointer(store, checkpoint_seconds=checkpoint_seconds,
                                              wal_limit_bytes=wal_limit_bytes, pause=self._committing,
                                              restart_bytes=wal_restart_bytes)
                              if self._sqlite else None)
        self.group_sizes: list[int] = []
        self.commits = 0
        self.inline_commits = 0
        """Groups committed on the submitting thread (:meth:`submit_rows` with ``inline``)."""
        self._conn: Connection | None = None

    def closed_error(self) -> WriterClosed:
        return WriterClosed("the prediction log writer is not running", fix="start the writer first")

    # -- lifecycle: the Worker's, plus the checkpointer beside the writer -------------------
    def start(self) -> Self:
        super().start()
        if self._checkpointer is not None:
            self._checkpointer.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting work, commit everything already queued, then stop the thread."""
        super().close(timeout)
        if self._checkpointer is not None:
            self._checkpointer.close(timeout)

    # -- queueing --------------------------------------------------------------------------
    def submit(self, op: Operation) -> Future[Any]:
        """Queue ``op``; the future holds its return value once its transaction has committed."""
        fut: Future[Any] = Future()
        self.put(_Op(op, future_done(fut)))
        return fut

    def submit_rows(self, rows: list[dict[str, Any]], done: Done, result: Any = None, *,
                    inline: bool = False) -> None:
        """Queue prediction rows (dicts with every column of ``predictions``); ``done(result,
        None)`` once committed. Raises :class:`WriterClosed` when stopped.

        With ``inline``, when the writer has nothing queued and is not committing, the rows
        commit here, on the calling thread, before this returns: a lone request then skips
        the hop to the writer and back (the commit is the same transaction the writer would
        run; under load the writer's group commit takes over)."""
        item = _Rows(rows, done, result)
        if inline and self.alive and self.empty() and self._committing.acquire(blocking=False):
            try:
                self.inline_commits += 1
                self._commit_locked([item])
            finally:
                self._committing.release()
            return
        self.put(item)

    def log_predictions(self, records: Iterable[PredictionRecord]) -> Future[list[str]]:
        """Insert prediction rows; the future holds their ids once committed."""
        now = utcnow()
        rows = [{"id": r.id, "created_at": now, "model_version": r.model_version, "input": r.input,
                 "output": r.output, "latency_ms": r.latency_ms} for r in records]
        fut: Future[list[str]] = Future()
        self.submit_rows(rows, future_done(fut), [r["id"] for r in rows])
        return fut

    def submit_feedback(self, prediction_id: str, value: Any, done: Done, *, kind: str = "label",
                        idempotency_key: str | None = None, check: Check | None = None) -> None:
        """:meth:`record_feedback` with a :data:`~dataflywheel.workers.Done` callback instead of a future."""
        self.put(FeedbackRequest(prediction_id, value, kind, idempotency_key, check, done))

    def record_feedback(
        self,
        prediction_id: str,
        value: Any,
        *,
        kind: str = "label",
        idempotency_key: str | None = None,
        check: Check | None = None,
    ) -> Future[FeedbackResult]:
        """Record feedback for a logged prediction.

        Raises (through the future) :class:`NotFoundError` for an unknown prediction id and
        :class:`IdempotencyConflict` when ``idempotency_key`` was used for other feedback (another
        prediction, kind or value). ``check(prediction, value)`` may normalise ``value`` or raise
        a FlywheelError. A repeated key with the same request (the same value once checked)
        returns the first request's id with ``created=False``.
        """
        fut: Future[FeedbackResult] = Future()
        self.submit_feedback(prediction_id, value, future_done(fut), kind=kind, idempotency_key=idempotency_key,
                             check=check)
        return fut

    # -- the writer thread -----------------------------------------------------------------
    def run(self) -> None:
        stop = False
        try:
            while not stop:
                group = [self.take()]
                while len(group) < self.max_group:
                    try:
                        group.append(self.take_nowait())
                    except queue.Empty:
                        break
                if any(item is STOP for item in group):
                    stop = True
                    group = [item for item in group if item is not STOP]
                    while True:  # drain what was queued before close()
                        try:
                            item = self.take_nowait()
                        except queue.Empty:
                            break
                        if item is not STOP:
                            group.append(item)
                if group:
                    self._commit_group(group)
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.invalidated or self._conn.closed:
            if self._conn is not None:
                self._conn.close()
            self._conn = self.store.engine.connect()
            if self._sqlite:  # the checkpointer checkpoints and truncates, off the commits' path
                self._conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
                # A commit that starts the WAL over would otherwise cut the file back to the limit
                # there and then: 100 ms for a 300 MB file here.
                self._conn.exec_driver_sql("PRAGMA journal_size_limit=-1")
                self._conn.commit()
        return self._conn

    def wal_size(self) -> int:
        """Bytes in the SQLite write-ahead log file now (0 without one)."""
        return self._checkpointer.wal_size() if self._checkpointer is not None else 0

    def _commit_group(self, group: list[_Item]) -> None:
        with self._committing:
            self._commit_locked(group)

    def _commit_locked(self, group: list[_Item]) -> None:
        try:
            conn = self._connection()
            with conn.begin():
                outcomes = self._apply(conn, group)
        except Exception as exc:  # noqa: BLE001 - any failure: replay alone, below
            if len(group) == 1:
                call_done(group[0].done, None, exc)
            else:  # only the culprit fails
                for item in group:
                    self._commit_locked([item])
            return
        self.commits += 1
        if self._checkpointer is not None:
            self._checkpointer.dirty = True
        self.group_sizes.append(len(group))
        for item, (ok, value) in zip(group, outcomes, strict=True):
            call_done(item.done, value if ok else None, None if ok else value)

    def _apply(self, conn: Connection, group: list[_Item]) -> list[tuple[bool, Any]]:
        """Run the group's items in order in the open transaction; each item's (ok, value)."""
        outcomes: list[tuple[bool, Any]] = []
        session: Session | None = None
        try:
            i = 0
            while i < len(group):
                item = group[i]
                if isinstance(item, _Op):
                    session = session or Session(bind=conn, expire_on_commit=False)
                    try:
                        outcomes.append((True, item.op(session)))
                    except FlywheelError as exc:
                        outcomes.append((False, exc))
                    session.flush()
                    i += 1
                    continue
                j = i + 1
                while j < len(group) and type(group[j]) is type(item):
                    j += 1
                if isinstance(item, _Rows):
                    run_rows = [r for r in group[i:j] if isinstance(r, _Rows)]  # all are: narrows the type
                    insert_predictions(conn, [row for r in run_rows for row in r.rows])
                    outcomes.extend((True, r.result) for r in run_rows)
                else:
                    outcomes.extend(record_feedback(conn, [f for f in group[i:j] if isinstance(f, FeedbackRequest)]))
                i = j
        finally:
            if session is not None:
                session.close()
        return outcomes

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
