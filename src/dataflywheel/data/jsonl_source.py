"""JSON lines: one object per line, and an error naming the first line that is not one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from dataflywheel.data.file_source import FileSource, read_error
from dataflywheel.data.source import ABSENT
from dataflywheel.errors import DataError


class JsonlSource(FileSource):
    """One JSON object per line; blank lines are skipped. Types are inferred from every line."""

    kind = "jsonl"
    extensions = (".jsonl", ".ndjson")

    def read_file(self, path: Path) -> pl.DataFrame:
        try:
            return pl.read_ndjson(path, infer_schema_length=None)
        except pl.exceptions.PolarsError as exc:
            raise _json_error(path) or read_error(path, "JSON lines", str(exc)) from None

    def raw_values(self, column: str) -> Iterator[tuple[str, Any]]:
        """Each non-blank line's ``column`` as JSON gives it (files in :meth:`files` order),
        with ``path line N``; a line without the key gives :data:`ABSENT`."""
        for path in self.files():
            with open(path, encoding="utf-8", errors="replace") as fh:
                for n, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    where = f"{path} line {n}"
                    try:
                        value = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", where=where,
                                        fix="fix the line so it holds one JSON object") from None
                    yield where, value.get(column, ABSENT) if isinstance(value, dict) else ABSENT


def _json_error(path: Path) -> DataError | None:
    """Locate the first line that is not a JSON object (error path only)."""
    seen = False
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                return DataError(
                    f"invalid JSON: {exc.msg} (column {exc.colno})",
                    where=f"{path} line {n}",
                    fix="fix the line so it holds one JSON object",
                )
            if not isinstance(value, dict):
                return DataError(
                    f"expected a JSON object, found {type(value).__name__}",
                    where=f"{path} line {n}",
                    fix='write one object per line, e.g. {"a": 1}',
                )
            seen = True
    if not seen:
        return DataError("file has no rows", where=str(path), fix="export the data again")
    return None
