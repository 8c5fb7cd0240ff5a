"""The log's two tables on the metadata store's :class:`~dataflywheel.store.metadata.Base`, and
how their JSON columns are written.

``predictions`` holds one row per served record (input, output, model version, latency);
``feedback`` the true labels sent back later, keyed to a prediction, optionally with a unique
idempotency key. JSON columns are written as orjson text (:func:`to_json`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from dataflywheel.store.metadata import Base, utcnow


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


_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def to_json(obj: Any) -> str:
    """JSON text as the store keeps it (orjson; numpy values allowed, unknown types as ``str``).
    A string UTF-8 cannot encode (an unpaired surrogate) is stored with U+FFFD in its place,
    so one odd value never fails the write."""
    try:
        return orjson.dumps(obj, default=str, option=_JSON_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return orjson.dumps(_valid_unicode(obj), default=str, option=_JSON_OPTIONS).decode()


def _valid_unicode(obj: Any) -> Any:
    if isinstance(obj, str):
        return obj.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")  # pairs joined
    if isinstance(obj, dict):
        return {_valid_unicode(k): _valid_unicode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_valid_unicode(v) for v in obj]
    return obj


def same_value(stored: Any, value: Any) -> bool:
    """Whether ``value`` is what a feedback row holds as ``stored`` (compared as the store keeps it)."""
    return bool(orjson.loads(to_json(stored)) == orjson.loads(to_json(value)))
