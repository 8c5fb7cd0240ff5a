"""The one interface every kind of data source implements (:mod:`.sources` registers the kinds)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

import polars as pl

ABSENT: Any = object()
"""A key a record of :meth:`Source.raw_values` lacks."""


class Source(ABC):
    """A table the flywheel can read. ``kind`` is its name in ``data.source.type``."""

    kind: ClassVar[str]

    @abstractmethod
    def read(self) -> pl.DataFrame:
        """The whole table; raise :class:`DataError` (one line, with where and fix) if unusable."""

    @abstractmethod
    def fingerprint(self) -> str:
        """sha256 hex of the bytes the table comes from; equal bytes, equal fingerprint."""

    @abstractmethod
    def describe(self) -> str:
        """A short name for messages, e.g. the path."""

    def raw_values(self, column: str) -> Iterator[tuple[str, Any]] | None:
        """The values of ``column``, one per row of :meth:`read`, as the source holds them, each
        with where it is (``path line N``): for checks that the frame's types would hide (polars
        reads a JSON number among strings as a string). None where the frame holds the values as
        they are (typed formats); a missing key is :data:`ABSENT`."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"
