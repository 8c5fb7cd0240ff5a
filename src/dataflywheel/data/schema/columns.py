"""The Schema model: what a table's columns are, saved beside every dataset version as JSON.

A :class:`Schema` holds only plain values (finite floats, strings), so that it round-trips
through JSON. :mod:`.inference` builds one from a frame.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from dataflywheel.config import FeatureType
from dataflywheel.errors import DataError, SchemaError
from dataflywheel.store.artifacts import atomic_write_text

SCHEMA_VERSION = 1


@dataclass
class ColumnSchema:
    name: str
    type: FeatureType
    dtype: str
    """polars dtype as read, ``str(dtype)``."""
    missing_rate: float
    """Share of nulls (and NaN for floats)."""
    n_unique: int = 0
    """Distinct non-missing values (a float column past 10,000 of them: an estimate, ~1 % off)."""
    min: float | None = None
    """number, and datetime as epoch seconds; statistics ignore missing and infinite values."""
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    categories: list[str] | None = None
    """category and binary: sorted observed values, as strings (see :func:`category_strings`)."""
    coercible_failures: int = 0
    """number columns read as strings: non-missing cells that do not parse as numbers."""


@dataclass
class Schema:
    columns: list[ColumnSchema]
    target: str | None = None
    n_rows: int = 0

    def column(self, name: str) -> ColumnSchema:
        # name -> position, checked on use (columns may change)
        index: dict[str, int] | None = self.__dict__.get("_index")
        if index is None or len(index) != len(self.columns):
            index = self.__dict__["_index"] = {c.name: i for i, c in enumerate(self.columns)}
        pos = index.get(name)
        if pos is not None and pos < len(self.columns) and self.columns[pos].name == name:
            return self.columns[pos]
        for c in self.columns:
            if c.name == name:
                return c
        raise SchemaError(
            "no such column in the schema", where=name, fix=f"use one of {few_names(self.names)}"
        )

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def features(self) -> list[ColumnSchema]:
        """Every column but the target."""
        return [c for c in self.columns if c.name != self.target]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SCHEMA_VERSION,
            "target": self.target,
            "n_rows": self.n_rows,
            "columns": [asdict(c) for c in self.columns],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schema:
        known = {f.name for f in fields(ColumnSchema)}
        try:
            columns = []
            for c in d["columns"]:
                unknown = set(c) - known
                if unknown:
                    raise TypeError(f"unknown column keys {sorted(unknown)}")
                columns.append(ColumnSchema(**c))
            return cls(columns=columns, target=d.get("target"), n_rows=int(d.get("n_rows", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(
                f"not a valid schema ({exc})", fix="re-create it from the data"
            ) from None

    def save(self, path: str | Path) -> None:
        """Write JSON atomically: a temporary file in the same folder, then ``os.replace``."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False))

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError("schema file not found", where=str(path)) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SchemaError(
                f"not valid JSON ({exc})", where=str(path), fix="re-create it from the data"
            ) from None
        try:
            return cls.from_dict(d)
        except SchemaError as exc:
            raise SchemaError(exc.message, where=str(path), fix=exc.fix) from None


def few_names(names: list[str], k: int = 8) -> str:
    """The first ``k`` names, and how many there are when there are more (for messages)."""
    shown = ", ".join(names[:k])
    return shown + (f", ... ({len(names)} columns)" if len(names) > k else "")
