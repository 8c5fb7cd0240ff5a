"""The log writer's WAL checkpointer: SQLite's write-ahead log checkpointed off the writer's path.

The writer's connection never checkpoints the WAL itself (a checkpoint's fsync would stall every
request in its group). :class:`WalCheckpointer`, a :class:`~dataflywheel.workers.Worker` beside
the writer, runs a passive checkpoint every ``checkpoint_seconds`` while writes arrive, and keeps
the WAL file small.

SQLite starts the WAL file over only when a write begins with every frame already copied into
the database. Under steady load that never happens by itself: writes land while the passive
checkpoint copies (and fsyncs). A truncating checkpoint would start it over, but it blocks
every writer while it copies and fsyncs (measured: 50-400 ms every few seconds at 2,000 lone
commits/s: the whole p99 of a lone request). So once the WAL holds more than ``restart_bytes``
of frames since it last started over, a round runs in three steps: the passive checkpoint,
writers going on beside it; a second one of the frames written meanwhile (a few ms, so the last
step has little to copy); then, holding ``pause`` (the log writer's commit lock, so no commit of
this process lands in between), a third, after which the next commit starts the file over.
Only the third pauses commits: 3 ms on a small store here, 20-100 ms on a 380 MB one (SQLite's
path for a checkpoint that copies every frame; not the fsync, measured), once per
``restart_bytes`` of log (every 5-10 s at the heaviest lone-request load on this machine).

Once a round passes without writes (a load peak is over) and the file is larger than
``wal_limit_bytes``, it is truncated (``wal_checkpoint(TRUNCATE)``); past twice
``restart_bytes`` (a WAL that does not start over: another process writes, say) it is truncated
even while writes arrive (stalling writers for at most ``TRUNCATE_WAIT_MS``, when readers hold
old snapshots). It checkpoints once more when it closes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from dataflywheel.store.metadata import MetadataStore
from dataflywheel.workers import Worker

TRUNCATE_WAIT_MS = 200
"""How long a truncating checkpoint waits for readers before it gives up until the next round."""
RESTART_BYTES = 256 * 1024 * 1024
"""Frames (bytes) in the WAL since it started over past which a round makes it start over."""
FRAME_HEADER = 24
"""Bytes a WAL frame adds to its page."""


class WalCheckpointer(Worker):
    """Checkpoint ``store``'s WAL off the writer's path, and keep the file small; once more at the end.

    The writer sets :attr:`dirty` after each commit; ``pause`` is the lock its commits hold."""

    name = "flywheel-wal-checkpoint"

    def __init__(self, store: MetadataStore, *, checkpoint_seconds: float, wal_limit_bytes: int,
                 pause: threading.Lock | None = None, restart_bytes: int = RESTART_BYTES) -> None:
        super().__init__()
        self.pause = pause
        self.restart_bytes = restart_bytes
        self.restarts = 0
        """Rounds that paused the commits to start the WAL over."""
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
            page = _pragma(conn, "PRAGMA page_size")
            frame_bytes = (int(page[0]) if page else 4096) + FRAME_HEADER
            try:
                stopping = False
                while not stopping:
                    stopping = not self.wait(self.checkpoint_seconds)
                    wrote, self.dirty = self.dirty, False
                    if wrote:
                        self._checkpoint(conn, frame_bytes)
                    size = self.wal_size()
                    if size > self.wal_limit_bytes and (not wrote or size > 2 * self.restart_bytes):
                        _pragma(conn, "PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                _pragma(conn, "PRAGMA busy_timeout=30000")  # the pooled connection's usual setting

    def _checkpoint(self, conn: Connection, frame_bytes: int) -> None:
        """A passive checkpoint beside the writers; past ``restart_bytes`` of frames (and if they
        committed meanwhile), the catch-up and the paused step of the module docstring, so that
        the next commit starts the WAL over. (The frame count a checkpoint returns is the WAL's
        at its start: it cannot tell whether commits landed while it ran; :attr:`dirty` can.)"""
        row = _pragma(conn, "PRAGMA wal_checkpoint(PASSIVE)")  # (busy, frames, frames copied)
        frames = int(row[1]) if row else 0
        if self.pause is None or not self.dirty or frames * frame_bytes < self.restart_bytes:
            return
        # Catch up once more beside the writers: the paused step then copies only what lands
        # during this short one.
        _pragma(conn, "PRAGMA wal_checkpoint(PASSIVE)")
        with self.pause:
            self.dirty = False
            _pragma(conn, "PRAGMA wal_checkpoint(PASSIVE)")
        self.restarts += 1


def _pragma(conn: Connection, sql: str) -> Sequence[Any] | None:
    """Run ``sql``; its first row (None when it has none, or failed)."""
    try:
        row = conn.exec_driver_sql(sql).first()
        conn.commit()
        return tuple(row) if row is not None else None
    except Exception:  # noqa: BLE001 - e.g. busy: the next round catches up
        conn.rollback()
        return None
