"""The one interface every kind of data source implements (:mod:`.sources` registers the kinds)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import polars as pl


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

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"
