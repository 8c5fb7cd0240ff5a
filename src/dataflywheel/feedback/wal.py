"""The log writer's WAL checkpointer: SQLite's write-ahead log checkpointed off the writer's path.

The writer's connection never checkpoints the WAL itself (a checkpoint's fsync would stall every
request in its group). :class:`WalCheckpointer`, a :class:`~dataflywheel.workers.Worker` beside
the writer, runs a passive checkpoint every ``checkpoint_seconds`` while writes arrive, and keeps
the WAL file small: once a round passes without writes (a load peak is over) and the file is
larger than ``wal_limit_bytes``, it truncates it (``wal_checkpoint(TRUNCATE)``); past twice that
size it does so even while writes arrive (stalling writers for at most ``TRUNCATE_WAIT_MS``,
when readers hold old snapshots). It checkpoints once more when it closes.
"""

from __future__ import annotations

import os

from sqlalchemy.engine import Connection

from dataflywheel.store.metadata import MetadataStore
from dataflywheel.workers import Worker

TRUNCATE_WAIT_MS = 200
"""How long a truncating checkpoint waits for readers before it gives up until the next round."""


class WalCheckpointer(Worker):
    """Checkpoint ``store``'s WAL off the writer's path, and keep the file small; once more at the end.

    The writer sets :attr:`dirty` after each commit."""

    name = "flywheel-wal-checkpoint"

    def __init__(self, store: MetadataStore, *, checkpoint_seconds: float, wal_limit_bytes: int) -> None:
        super().__init__()
        self.store = store
        self.checkpoint_seconds = checkpoint_seconds
        self.wal_limit_bytes = wal_limit_bytes
        self.dirty = False
        database = store.engine.url.database
        self._wal = f"{database}-wal" if database and database != ":memory:" else None

    def wal_size(self) -> int:
        """Bytes in the SQLite write-ahead log file now (0 without one)."""
        try:
            return os.path.getsize(self._wal) if self._wal else 0
        except OSError:
            return 0

    def run(self) -> None:
        with self.store.engine.connect() as conn:
            _pragma(conn, f"PRAGMA journal_size_limit={int(self.wal_limit_bytes)}")
            _pragma(conn, f"PRAGMA busy_timeout={TRUNCATE_WAIT_MS}")
            try:
                stopping = False
                while not stopping:
                    stopping = not self.wait(self.checkpoint_seconds)
                    wrote, self.dirty = self.dirty, False
                    if wrote:
                        _pragma(conn, "PRAGMA wal_checkpoint(PASSIVE)")
                    size = self.wal_size()
                    if size > self.wal_limit_bytes and (not wrote or size > 2 * self.wal_limit_bytes):
                        _pragma(conn, "PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                _pragma(conn, "PRAGMA busy_timeout=30000")  # the pooled connection's usual setting


def _pragma(conn: Connection, sql: str) -> None:
    try:
        conn.exec_driver_sql(sql)
        conn.commit()
    except Exception:  # noqa: BLE001 - e.g. busy: the next round catches up
        conn.rollback()
