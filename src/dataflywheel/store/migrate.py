"""Bring a metadata store's schema to the newest Alembic revision when it is opened.

A new store is created at the head revision; a store at an older revision is upgraded in
place; a store made before migrations (today's tables, no ``alembic_version`` table) is
stamped at the baseline first. Opening a store that is at head only reads its revision.

Two processes may open a new store at once: the check and the upgrade run in one write
transaction (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL), so the second
waits for the first and then finds the store at head. ``python -m dataflywheel.store.migrate
URL`` prints a store's revision and the head.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData, event, inspect, text
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"
HEAD = "0002"
"""The newest revision in ``migrations/versions`` (a test checks it against Alembic's view): a
store at it is opened without importing Alembic."""
VERSION_TABLE = "alembic_version"
_PG_LOCK = 0x666C7977  # any fixed key: the advisory lock every migrating process takes


def target_metadata() -> MetaData:
    """Every table the code maps (the metadata and the log tables)."""
    import dataflywheel.feedback.log  # noqa: F401 - maps the log tables onto Base
    from dataflywheel.store.metadata import Base

    return Base.metadata


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def head() -> str:
    """The newest revision, as Alembic reads it from the migration scripts."""
    from alembic.script import ScriptDirectory

    rev = ScriptDirectory.from_config(_config()).get_current_head()
    assert rev is not None
    return rev


def revision(connection: Connection) -> str | None:
    """The revision the store is at; None before migrations (or for an empty database)."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade(engine: Engine) -> None:
    """Migrate the store behind ``engine`` to :func:`head` (see the module docstring)."""
    with engine.connect() as conn:
        if revision(conn) == HEAD:
            return
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        locked = _immediate(engine)
        try:
            _upgrade(locked)
        finally:
            locked.dispose()
    else:
        _upgrade(engine)


def _immediate(engine: Engine) -> Engine:
    """An engine on the same SQLite file whose transactions begin with ``BEGIN IMMEDIATE``:
    the write lock is taken before the revision is read."""
    from dataflywheel.store.metadata import make_engine

    locked = make_engine(engine.url.render_as_string(hide_password=False))

    @event.listens_for(locked, "connect")
    def _driver_autocommit(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's BEGIN below is then the only one

    @event.listens_for(locked, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return locked


def _upgrade(engine: Engine) -> None:
    from alembic import command

    with engine.connect() as conn, conn.begin(), _quiet_alembic():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
        tables = set(inspect(conn).get_table_names())
        config = _config(conn)
        if VERSION_TABLE not in tables and "datasets" in tables:
            _baseline().create_missing(conn)
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")


def _baseline() -> Any:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_config()).get_revision(BASELINE)
    assert script is not None
    return script.module


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Alembic logs each step at INFO; a store migrating itself says nothing."""
    logger = logging.getLogger("alembic")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def main(argv: list[str]) -> int:
    from dataflywheel.store.metadata import make_engine

    if len(argv) != 1:
        print("usage: python -m dataflywheel.store.migrate sqlite:///path/to/flywheel.db", file=sys.stderr)
        return 2
    engine = make_engine(argv[0])
    try:
        with engine.connect() as conn:
            print(f"revision: {revision(conn) or 'none (not migrated yet)'}\nhead: {head()}")
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
