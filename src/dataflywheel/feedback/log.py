"""The prediction and feedback log, written by one group-commit thread.

Two tables on the metadata store's :class:`~dataflywheel.store.metadata.Base`: ``predictions``
(one row per served record: input, output, model version, latency) and ``feedback`` (true
labels sent back later, keyed to a prediction, optionally with a unique idempotency key).

All writes go through :class:`LogWriter`. Callers queue work and learn its outcome only once
its rows are committed: through a :class:`concurrent.futures.Future` (``submit``,
``log_predictions``, ``record_feedback``) or, cheaper on a server's hot path, through a
:data:`~dataflywheel.workers.Done` callback run on the writer thread (``submit_rows``,
``submit_feedback``). The writer and the checkpointer are :class:`~dataflywheel.workers.Worker`
threads. The writer thread takes everything queued, runs it in ONE transaction on the
connection it holds and commits once (group commit), so a burst of requests costs one commit,
not one each.
Within a group, adjacent prediction writes become one executemany, and adjacent feedback
requests share one lookup of their predictions and idempotency keys (``WHERE ... IN``) and
one insert. JSON columns are written as orjson text. On SQLite the writer's connection never
checkpoints the WAL itself (a checkpoint's fsync would stall every request in its group); a
separate thread runs a passive checkpoint every ``checkpoint_seconds`` while writes arrive, and
keeps the WAL file small: once a round passes without writes (a load peak is over) and the file
is larger than ``wal_limit_bytes``, it truncates it (``wal_checkpoint(TRUNCATE)``); past twice
that size it does so even while writes arrive (stalling writers for at most
``TRUNCATE_WAIT_MS``, when readers hold old snapshots). Being the only writer also makes the
idempotency check race-free within a process; across processes a clash on the unique key
fails the group, which is then replayed and finds the other process's row.

Contract for an operation: it may raise a :class:`FlywheelError` to reject its request, but
only *before* it adds anything to the session; the rest of the group still commits. If the
commit itself fails (or an operation raises anything else), the group is rolled back and each
item is replayed in its own transaction, so one bad row fails only its own caller.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

import orjson
from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, bindparam, func, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, Session, mapped_column

from dataflywheel.errors import FlywheelError, NotFoundError, StoreError
from dataflywheel.store.metadata import WAL_SIZE_LIMIT, Base, MetadataStore, utcnow
from dataflywheel.workers import STOP, Done, Worker, WorkerClosed, call_done, future_done

Operation = Callable[[Session], Any]
Check = Callable[[Any, Any], Any]
"""``check(prediction, value)``: the stored value, or raise a FlywheelError; ``prediction`` has
the logged row's ``id``, ``model_version`` and ``output``."""


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


_PREDICTIONS = Base.metadata.tables[PredictionRow.__tablename__]
_FEEDBACK = Base.metadata.tables[FeedbackRow.__tablename__]
_P = _PREDICTIONS.c
_F = _FEEDBACK.c
_INSERT_PREDICTIONS = insert(_PREDICTIONS).values(
    input=bindparam("input_json", type_=Text()), output=bindparam("output_json", type_=Text()))
_INSERT_FEEDBACK = insert(_FEEDBACK).values(value=bindparam("value_json", type_=Text()))


TRUNCATE_WAIT_MS = 200
"""How long a truncating checkpoint waits for readers before it gives up until the next round."""


class IdempotencyConflict(StoreError):
    """An idempotency key was reused for a different request."""


class WriterClosed(StoreError, WorkerClosed):
    """The log writer is stopped; nothing more can be queued."""


def new_id() -> str:
    """A random (version 4) UUID as hex (:func:`new_ids` of one)."""
    return new_ids(1)[0]


class _RandomBytes:
    """The OS random source, read 4 KiB at a time. The server names every prediction on its
    model thread; there one ``os.urandom`` call per id (``uuid4``) took about 85 us under load,
    most of it waiting to take the GIL back after the system call. Thread-safe."""

    def __init__(self, chunk: int = 4096) -> None:
        self.chunk = chunk
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._buffer):
                self._buffer, self._at = os.urandom(max(self.chunk, n)), 0
            out = self._buffer[self._at : self._at + n]
            self._at += n
            return out


_RANDOM = _RandomBytes()


def new_ids(n: int) -> list[str]:
    """``n`` random (version 4) UUIDs as hex, from pooled OS randomness."""
    raw = bytearray(_RANDOM.take(16 * n))
    for i in range(0, 16 * n, 16):
        raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40  # version 4
        raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80  # RFC 4122 variant
    return [raw[i : i + 16].hex() for i in range(0, 16 * n, 16)]


def to_json(obj: Any) -> str:
    """JSON text as the store keeps it (orjson; numpy values allowed, unknown types as ``str``).
    A string UTF-8 cannot encode (an unpaired surrogate) is stored with U+FFFD in its place,
    so one odd value never fails the write."""
    try:
        return orjson.dumps(obj, default=str, option=_JSON_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return orjson.dumps(_valid_unicode(obj), default=str, option=_JSON_OPTIONS).decode()


_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _valid_unicode(obj: Any) -> Any:
    if isinstance(obj, str):
        return obj.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")  # pairs joined
    if isinstance(obj, dict):
        return {_valid_unicode(k): _valid_unicode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_valid_unicode(v) for v in obj]
    return obj


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


@dataclass(slots=True)
class _Op:
    op: Operation
    done: Done


@dataclass(slots=True)
class _Rows:
    rows: list[dict[str, Any]]
    done: Done
    result: Any


@dataclass(slots=True)
class _Feedback:
    prediction_id: str
    value: Any
    kind: str
    key: str | None
    check: Check | None
    done: Done


_Item = _Op | _Rows | _Feedback


class LogWriter(Worker):
    """The group-commit writer thread over a :class:`MetadataStore` (see the module docstring).

    ``max_group`` bounds the items in one transaction. ``group_sizes`` records the size of
    every committed group (for tests and metrics); ``commits`` counts transactions.
    """

    name = "flywheel-log-writer"

    def __init__(self, store: MetadataStore, *, max_group: int = 1024, checkpoint_seconds: float = 1.0,
                 wal_limit_bytes: int = WAL_SIZE_LIMIT) -> None:
        super().__init__()
        self.store = store
        self.max_group = max_group
        self.checkpoint_seconds = checkpoint_seconds
        self.wal_limit_bytes = wal_limit_bytes
        self._sqlite = store.engine.dialect.name == "sqlite"
        database = store.engine.url.database if self._sqlite else None
        self._wal = f"{database}-wal" if database and database != ":memory:" else None
        self._dirty = False
        self._checkpointer = _WalCheckpointer(self) if self._sqlite else None
        self.group_sizes: list[int] = []
        self.commits = 0
        self.inline_commits = 0
        """Groups committed on the submitting thread (:meth:`submit_rows` with ``inline``)."""
        self._conn: Connection | None = None
        self._committing = threading.Lock()
        """Held while a group commits, on the writer thread or inline."""

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
        self.put(_Feedback(prediction_id, value, kind, idempotency_key, check, done))

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
            if self._sqlite:
                self._conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
                self._conn.commit()
        return self._conn

    def wal_size(self) -> int:
        """Bytes in the SQLite write-ahead log file now (0 without one)."""
        try:
            return os.path.getsize(self._wal) if self._wal else 0
        except OSError:
            return 0

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
        self._dirty = True
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
                    run_rows: list[_Rows] = group[i:j]  # type: ignore[assignment]
                    _insert_predictions(conn, [row for r in run_rows for row in r.rows])
                    outcomes.extend((True, r.result) for r in run_rows)
                else:
                    outcomes.extend(_record_feedback(conn, group[i:j]))  # type: ignore[arg-type]
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


class _WalCheckpointer(Worker):
    """Checkpoint a writer's WAL off its path, and keep the file small; once more at the end."""

    name = "flywheel-wal-checkpoint"

    def __init__(self, writer: LogWriter) -> None:
        super().__init__()
        self.writer = writer

    def run(self) -> None:
        w = self.writer
        with w.store.engine.connect() as conn:
            _pragma(conn, f"PRAGMA journal_size_limit={int(w.wal_limit_bytes)}")
            _pragma(conn, f"PRAGMA busy_timeout={TRUNCATE_WAIT_MS}")
            try:
                stopping = False
                while not stopping:
                    stopping = not self.wait(w.checkpoint_seconds)
                    wrote, w._dirty = w._dirty, False
                    if wrote:
                        _pragma(conn, "PRAGMA wal_checkpoint(PASSIVE)")
                    size = w.wal_size()
                    if size > w.wal_limit_bytes and (not wrote or size > 2 * w.wal_limit_bytes):
                        _pragma(conn, "PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                _pragma(conn, "PRAGMA busy_timeout=30000")  # the pooled connection's usual setting


def _insert_predictions(conn: Connection, rows: list[dict[str, Any]]) -> None:
    params = [{"id": r["id"], "created_at": r["created_at"], "model_version": r["model_version"],
               "input_json": to_json(r["input"]), "output_json": to_json(r["output"]),
               "latency_ms": r["latency_ms"]} for r in rows]
    if params:
        conn.execute(_INSERT_PREDICTIONS, params)


def _record_feedback(conn: Connection, run: list[_Feedback]) -> list[tuple[bool, Any]]:
    """Feedback requests in one go: one lookup of their keys, one of their predictions, one insert."""
    keys = {f.key for f in run if f.key is not None}
    seen: dict[str, tuple[str, str, str, Any]] = {}  # idempotency key -> (feedback id, prediction id, kind, value)
    if keys:
        q = select(_F.id, _F.prediction_id, _F.kind, _F.value, _F.idempotency_key).where(
            _F.idempotency_key.in_(list(keys)))
        seen = {r.idempotency_key: (r.id, r.prediction_id, r.kind, r.value) for r in conn.execute(q)}
    q = select(_P.id, _P.model_version, _P.output).where(_P.id.in_(list({f.prediction_id for f in run})))
    predictions = {r.id: r for r in conn.execute(q)}
    now = utcnow()
    outcomes: list[tuple[bool, Any]] = []
    rows: list[dict[str, Any]] = []
    for f in run:
        try:
            prediction = predictions.get(f.prediction_id)
            first = seen.get(f.key) if f.key is not None else None
            if first is not None and (first[1] != f.prediction_id or first[2] != f.kind):
                raise _conflict(f.key, f"feedback on prediction {first[1]!r}")
            if prediction is None:
                raise NotFoundError(f"no prediction {f.prediction_id!r}", where="prediction_id",
                                    fix="send the prediction_id returned by /v1/predict")
            stored = f.check(prediction, f.value) if f.check is not None else f.value
            value = {f.kind: stored}
            if first is not None:
                if not same_value(first[3], value):
                    raise _conflict(f.key, f"{f.kind} {(first[3] or {}).get(f.kind)!r}")
                outcomes.append((True, FeedbackResult(first[0], created=False)))
                continue
        except Exception as exc:  # noqa: BLE001 - a rejected request fails only itself
            outcomes.append((False, exc))
            continue
        row_id = new_id()
        rows.append({"id": row_id, "prediction_id": f.prediction_id, "created_at": now, "kind": f.kind,
                     "value_json": to_json(value), "idempotency_key": f.key})
        if f.key is not None:
            seen[f.key] = (row_id, f.prediction_id, f.kind, value)
        outcomes.append((True, FeedbackResult(row_id, created=True)))
    if rows:
        conn.execute(_INSERT_FEEDBACK, rows)
    return outcomes


def same_value(stored: Any, value: Any) -> bool:
    """Whether ``value`` is what a feedback row holds as ``stored`` (compared as the store keeps it)."""
    return bool(orjson.loads(to_json(stored)) == orjson.loads(to_json(value)))


def _conflict(key: str | None, first: str) -> IdempotencyConflict:
    return IdempotencyConflict(f"idempotency key already used for {first}, not for this request",
                               where=f"idempotency_key {key!r}",
                               fix="resend the first request unchanged, or use a new key for new feedback")


def _pragma(conn: Connection, sql: str) -> None:
    try:
        conn.exec_driver_sql(sql)
        conn.commit()
    except Exception:  # noqa: BLE001 - e.g. busy: the next round catches up
        conn.rollback()
