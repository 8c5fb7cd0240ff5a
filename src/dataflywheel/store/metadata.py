"""The metadata store: every artifact of the loop, its lineage and its audit history.

SQLAlchemy 2 ORM; an embedded SQLite file (WAL mode) by default, any SQLAlchemy URL
(e.g. PostgreSQL) for a team. Every SQLite connection sets ``journal_size_limit`` to
:data:`WAL_SIZE_LIMIT`, so the write-ahead log shrinks back to that size each time it restarts
after a complete checkpoint (the server's log writer also truncates it once a load peak is
over). All writes go through :meth:`MetadataStore.transaction`, so a failed step leaves
nothing half-recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from dataflywheel.errors import StoreError


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class DatasetRow(Base):
    """A dataset version: processed splits of one source snapshot under one processing config."""

    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    source: Mapped[str] = mapped_column(Text)
    source_fingerprint: Mapped[str] = mapped_column(String(64))
    config_hash: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255))
    n_rows: Mapped[int] = mapped_column(Integer)
    split_sizes: Mapped[dict[str, Any]] = mapped_column(JSON)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    artifact: Mapped[str] = mapped_column(Text)
    """Artifact folder (relative to the artifact root)."""


class DatasetParentRow(Base):
    __tablename__ = "dataset_parents"
    child_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    parent_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)


class DatasetFeedbackRow(Base):
    """Lineage: a feedback row a dataset version considered, and its ``role`` there: ``train``,
    ``valid``, ``holdout`` (evaluation only), ``dropped`` (its content is there already: a
    duplicate, or superseded by a newer label) or ``rejected`` (not held: the model cannot use
    it). No foreign key to ``feedback``: that table lives on the same Base but is created by
    the log writer."""

    __tablename__ = "dataset_feedback"
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    feedback_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(16))


class RunRow(Base):
    """One training run: a dataset version + a config -> a model version."""

    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_key: Mapped[str] = mapped_column(String(64), index=True)
    """Hash of everything that determines the result (dataset, model/train config, code)."""
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    history: Mapped[list[Any]] = mapped_column(JSON)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    model_type: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(32))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    artifact: Mapped[str] = mapped_column(Text)
    verdict: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """The promotion decision taken when this version was registered, with its reasons."""


class AliasRow(Base):
    __tablename__ = "aliases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(ForeignKey("model_versions.version"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AliasHistoryRow(Base):
    """Audit trail: every move of every alias, never updated or deleted."""

    __tablename__ = "alias_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    previous_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


WAL_SIZE_LIMIT = 32 * 1024 * 1024
"""Bytes the SQLite write-ahead log is cut back to when it restarts (``journal_size_limit``)."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


# SQLite's messages for a file that is not (or no longer) a usable database: damage the user
# repairs from a backup, as opposed to a lock or a constraint, which are ordinary errors.
_DAMAGE = ("file is not a database", "malformed", "unable to open database file", "disk i/o error")


def damaged_store(url: str, exc: BaseException) -> StoreError | None:
    """A one-line :class:`StoreError` naming the store file when ``exc`` says it is damaged."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    if not url.startswith("sqlite") or not any(m in text for m in _DAMAGE):
        return None
    path = url.split("///", 1)[-1] or url
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    if Path(path).is_dir():
        reason = "a folder is where the database file should be"
    return StoreError(f"the metadata store cannot be read ({reason})", where=path,
                      fix="restore it from a backup, or move it aside to start a new store "
                          "(the artifacts folder beside it is kept)")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, json_serializer=_dumps)
        event.listen(engine, "connect", _sqlite_pragmas)

        @event.listens_for(engine, "handle_error")
        def _name_damage(context: Any) -> None:
            error = damaged_store(url, context.original_exception)
            if error is not None:
                raise error from context.original_exception
    else:
        engine = create_engine(url, pool_pre_ping=True, json_serializer=_dumps)
    return engine


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)


class MetadataStore:
    """Typed access to the metadata tables; create with a SQLAlchemy URL. Opening a store
    migrates its schema to the newest revision (:mod:`dataflywheel.store.migrate`)."""

    def __init__(self, url: str) -> None:
        from dataflywheel.store.migrate import upgrade

        self.url = url
        self.engine = make_engine(url)
        try:
            upgrade(self.engine)
        except DatabaseError as exc:  # raised while connecting, before handle_error applies
            error = damaged_store(url, exc)
            if error is None:
                raise
            self.engine.dispose()
            raise error from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any error."""
        with self._sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    # Convenience reads used by several stages.
    def dataset(self, dataset_id: str) -> DatasetRow | None:
        with self.transaction() as s:
            return s.get(DatasetRow, dataset_id)

    def dataset_parents(self, dataset_id: str) -> list[str]:
        with self.transaction() as s:
            q = select(DatasetParentRow.parent_id).where(DatasetParentRow.child_id == dataset_id)
            return list(s.scalars(q))
