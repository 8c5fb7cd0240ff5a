"""The SQL one commit group of the log writer runs: adjacent prediction writes as one
executemany, adjacent feedback requests with one lookup of their predictions and idempotency
keys (``WHERE ... IN``) and one insert. JSON columns go in as orjson text
(:func:`~dataflywheel.feedback.tables.to_json`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Text, bindparam, insert, select
from sqlalchemy.engine import Connection

from dataflywheel.errors import NotFoundError, StoreError
from dataflywheel.feedback.ids import new_id
from dataflywheel.feedback.tables import FeedbackRow, PredictionRow, same_value, to_json
from dataflywheel.store.metadata import Base, utcnow
from dataflywheel.workers import Done

Check = Callable[[Any, Any], Any]
"""``check(prediction, value)``: the stored value, or raise a FlywheelError; ``prediction`` has
the logged row's ``id``, ``model_version`` and ``output`` (and its ``input`` when ``value`` is a
dict of fields: feedback on a completion reads the request's ``n`` there). A dict it returns
(or a dict ``value`` without a check) is the row's value as it is; anything else (a label) is
stored as ``{kind: value}``."""

_PREDICTIONS = Base.metadata.tables[PredictionRow.__tablename__]
_FEEDBACK = Base.metadata.tables[FeedbackRow.__tablename__]
_P = _PREDICTIONS.c
_F = _FEEDBACK.c
_INSERT_PREDICTIONS = insert(_PREDICTIONS).values(
    input=bindparam("input_json", type_=Text()), output=bindparam("output_json", type_=Text()))
_INSERT_FEEDBACK = insert(_FEEDBACK).values(value=bindparam("value_json", type_=Text()))


class IdempotencyConflict(StoreError):
    """An idempotency key was reused for a different request."""


@dataclass
class FeedbackResult:
    id: str
    created: bool
    """False when an earlier request with the same idempotency key already recorded it."""


@dataclass(slots=True)
class FeedbackRequest:
    """One queued feedback write: what to record, how to check it, whom to tell."""

    prediction_id: str
    value: Any
    kind: str
    key: str | None
    check: Check | None
    done: Done


class PreparedInsert:
    """An insert compiled once for a dialect and run as one DBAPI ``executemany`` inside the
    connection's transaction, its values passed through the same bind processing SQLAlchemy
    would apply (a datetime as SQLite's text), so rows read back exactly as through
    ``conn.execute``; it skips SQLAlchemy's per-statement work on the log's hot path."""

    def __init__(self, statement: Any, dialect: Any, keys: list[str]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=keys)
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        self.names: list[str] = list(compiled.positiontup or []) if self.positional else list(compiled.binds)
        processors = {name: compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
                      for name in self.names}
        self.processors = {name: p for name, p in processors.items() if p is not None}

    def run(self, conn: Connection, params: list[dict[str, Any]]) -> None:
        for row in params:
            for name, process in self.processors.items():
                row[name] = process(row[name])
        values: list[Any] = [tuple(row[n] for n in self.names) for row in params] if self.positional else params
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]  # open: in a transaction
        try:
            cursor.executemany(self.sql, values)
        finally:
            cursor.close()


_PREPARED: dict[str, PreparedInsert] = {}


def insert_predictions(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Prediction rows (dicts with every column of ``predictions``) in one executemany."""
    params = [{"id": r["id"], "created_at": r["created_at"], "model_version": r["model_version"],
               "input_json": to_json(r["input"]), "output_json": to_json(r["output"]),
               "latency_ms": r["latency_ms"]} for r in rows]
    if not params:
        return
    dialect = conn.dialect
    prepared = _PREPARED.get(dialect.name)
    if prepared is None:
        prepared = _PREPARED[dialect.name] = PreparedInsert(_INSERT_PREDICTIONS, dialect, list(params[0]))
    prepared.run(conn, params)


def record_feedback(conn: Connection, run: list[FeedbackRequest]) -> list[tuple[bool, Any]]:
    """Feedback requests in one go: one lookup of their keys, one of their predictions, one
    insert; each request's (ok, :class:`FeedbackResult` or the exception that rejects it)."""
    keys = {f.key for f in run if f.key is not None}
    seen: dict[str, tuple[str, str, str, Any]] = {}  # idempotency key -> (feedback id, prediction id, kind, value)
    if keys:
        q = select(_F.id, _F.prediction_id, _F.kind, _F.value, _F.idempotency_key).where(
            _F.idempotency_key.in_(list(keys)))
        seen = {r.idempotency_key: (r.id, r.prediction_id, r.kind, r.value) for r in conn.execute(q)}
    columns = [_P.id, _P.model_version, _P.output]
    if any(isinstance(f.value, dict) for f in run):  # fields, not a plain label: the check may read the input
        columns.append(_P.input)
    q = select(*columns).where(_P.id.in_(list({f.prediction_id for f in run})))
    predictions = {r.id: r for r in conn.execute(q)}
    now = utcnow()
    tick = timedelta(microseconds=1)
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
                                    fix="send the prediction_id returned by /v1/predict, or a completion's "
                                        "response id")
            stored = f.check(prediction, f.value) if f.check is not None else f.value
            value = stored if isinstance(stored, dict) else {f.kind: stored}
            if first is not None:
                if not same_value(first[3], value):
                    raise _conflict(f.key, f"{f.kind} {(first[3] or {}).get(f.kind)!r}")
                outcomes.append((True, FeedbackResult(first[0], created=False)))
                continue
        except Exception as exc:  # noqa: BLE001 - a rejected request fails only itself
            outcomes.append((False, exc))
            continue
        row_id = new_id()
        # one commit's rows a microsecond apart, in the order they came: the latest request is the newest row
        rows.append({"id": row_id, "prediction_id": f.prediction_id, "created_at": now + len(rows) * tick,
                     "kind": f.kind, "value_json": to_json(value), "idempotency_key": f.key})
        if f.key is not None:
            seen[f.key] = (row_id, f.prediction_id, f.kind, value)
        outcomes.append((True, FeedbackResult(row_id, created=True)))
    if rows:
        conn.execute(_INSERT_FEEDBACK, rows)
    return outcomes


def _conflict(key: str | None, first: str) -> IdempotencyConflict:
    return IdempotencyConflict(f"idempotency key already used for {first}, not for this request",
                               where=f"idempotency_key {key!r}",
                               fix="resend the first request unchanged, or use a new key for new feedback")
