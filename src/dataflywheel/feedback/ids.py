"""Prediction and feedback ids: random (version 4) UUIDs as hex, from pooled OS randomness."""

from __future__ import annotations

import os
import threading


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


def new_id() -> str:
    """A random (version 4) UUID as hex (:func:`new_ids` of one)."""
    return new_ids(1)[0]
