"""The ``sql`` source kind: the result of one query on any SQLAlchemy URL.

:mod:`dataflywheel.data.sources` registers :func:`sql_source_from_config` under ``sql`` and
imports this module only when a sql source is built, so SQLAlchemy loads only when used.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import polars as pl

from dataflywheel.config import SourceConfig
from dataflywheel.data.source import Source
from dataflywheel.errors import DataError


class SqlSource(Source):
    """The result of a query on any SQLAlchemy URL. A relative SQLite path is relative to
    ``base_dir``; a missing SQLite file is an error (never created). The fingerprint hashes the
    query text and the result as Arrow IPC of the frame :meth:`read` last returned or, before a
    read, of a fresh result that the next :meth:`read` then returns (one query, one snapshot).
    """

    kind = "sql"

    def __init__(self, url: str, query: str, base_dir: Path | None = None) -> None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            parsed = make_url(url)
        except ArgumentError:
            raise DataError(
                "not a valid database URL",
                where="data.source.url",
                fix="use a SQLAlchemy URL such as sqlite:///data.db or postgresql://user@host/db",
            ) from None
        db = parsed.database
        if (
            parsed.get_backend_name() == "sqlite"
            and db
            and db != ":memory:"
            and not db.startswith("file:")
        ):
            p = Path(db)
            p = p if p.is_absolute() or base_dir is None else base_dir / p
            if not p.is_file():
                raise DataError(
                    "database file not found",
                    where=str(p),
                    fix="check data.source.url (relative to flywheel.yaml)",
                )
            parsed = parsed.set(database=str(p))
        self.url = parsed
        self.query = query
        self._last: pl.DataFrame | None = None
        self._pending: pl.DataFrame | None = None

    def describe(self) -> str:
        return f"query on {self.url.render_as_string(hide_password=True)}"

    def read(self) -> pl.DataFrame:
        df = self._pending if self._pending is not None else self._query()
        self._pending = None
        self._last = df
        return df.clone()

    def fingerprint(self) -> str:
        df = self._pending if self._pending is not None else self._last
        if df is None:
            df = self._pending = self._query()
        buf = io.BytesIO()
        df.write_ipc_stream(buf, compression="uncompressed")
        digest = hashlib.sha256(self.query.encode() + b"\0")
        digest.update(buf.getvalue())
        return digest.hexdigest()

    def _query(self) -> pl.DataFrame:
        import sqlalchemy as sa

        try:
            engine = sa.create_engine(self.url)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
            raise DataError(
                f"cannot use this database URL ({_first_line(str(exc))})",
                where="data.source.url",
                fix="check the URL and that its database driver is installed",
            ) from None
        try:
            with engine.connect() as conn:
                df = pl.read_database(sa.text(self.query), conn, infer_schema_length=None)
        except sa.exc.SQLAlchemyError as exc:
            reason = _first_line(str(getattr(exc, "orig", None) or exc))
            raise DataError(
                f"query failed: {reason}", where=self.describe(), fix="check data.source.query"
            ) from None
        finally:
            engine.dispose()
        if df.height == 0:
            raise DataError(
                "query returned no rows", where=self.describe(), fix="check data.source.query"
            )
        return df


def sql_source_from_config(cfg: SourceConfig, base_dir: Path) -> SqlSource:
    """The :class:`SqlSource` for ``cfg.url`` and ``cfg.query``; a relative SQLite path
    resolves against ``base_dir``."""
    if not (cfg.url and cfg.query):
        raise DataError("a sql source needs both url and query", where="data.source")
    return SqlSource(cfg.url, cfg.query, base_dir)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
