"""Where raw data comes from: the registry of source kinds, and how a config or a path picks one.

A source reads a whole table into a polars frame and fingerprints the bytes it came from, so
a dataset version can say exactly what it was built from. Sources only read: they never write
or create a file (not even an SQLite database at a mistyped path).

Every failure the user can fix is a one-line :class:`~dataflywheel.errors.DataError` naming the
file (and line) and the fix. A numeric column holding a stray non-numeric string still loads, as
a string column; the processing stage coerces it and counts the failures.

The :class:`Source` interface is in :mod:`.source`; the built-in kinds each have a module (the
file kinds :mod:`.csv_source`, :mod:`.jsonl_source` and :mod:`.parquet_source` over
:mod:`.file_source`; :mod:`.sql_source`; the scikit-learn examples in :mod:`.examples`, both
imported when first used). Everything here is also importable from this module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dataflywheel.config import SourceConfig
from dataflywheel.data.csv_source import CsvSource, TsvSource
from dataflywheel.data.file_source import MAX_COLUMNS, PATH_FIX, FileSource, visible_files
from dataflywheel.data.jsonl_source import JsonlSource
from dataflywheel.data.parquet_source import ParquetSource
from dataflywheel.data.source import Source
from dataflywheel.errors import DataError

SourceFactory = Callable[[SourceConfig, Path], Source]

__all__ = [
    "EXTENSIONS",
    "MAX_COLUMNS",
    "CsvSource",
    "FileSource",
    "JsonlSource",
    "ParquetSource",
    "Source",
    "SourceFactory",
    "TsvSource",
    "available_sources",
    "detect_kind",
    "register_source",
    "source_from_config",
    "source_from_path",
]

_REGISTRY: dict[str, SourceFactory] = {}


def register_source(kind: str, factory: SourceFactory) -> None:
    """Make ``kind`` usable as ``data.source.type``; ``factory(cfg, base_dir)`` builds it."""
    if kind in _REGISTRY or kind == "auto":
        raise ValueError(f"source kind '{kind}' is already registered")
    _REGISTRY[kind] = factory


def available_sources() -> list[str]:
    return sorted(_REGISTRY)


def source_from_config(cfg: SourceConfig, base_dir: Path) -> Source:
    """Build the source ``cfg`` describes; relative paths resolve against ``base_dir``."""
    kind: str = cfg.type
    if kind == "auto":
        if cfg.path is None:
            raise DataError("needs path (a file or folder of data)", where="data.source.path")
        kind = detect_kind(_resolve(cfg.path, base_dir))
    factory = _REGISTRY.get(kind)
    if factory is None:
        raise DataError(
            f"unknown source type '{kind}'",
            where="data.source.type",
            fix=f"use one of auto, {', '.join(available_sources())}",
        )
    return factory(cfg, base_dir)


def source_from_path(path: str | Path) -> Source:
    """A source for a path (kind from its extension) or a ``sklearn:NAME`` example."""
    text = str(path)
    if text.startswith("sklearn:"):
        return source_from_config(SourceConfig.from_shorthand(text), Path.cwd())
    given = Path(text)
    supported = ", ".join(sorted(EXTENSIONS))
    if not given.exists():
        raise DataError("file not found", where=text, fix="check the path (relative to the current folder)")
    if given.is_file() and given.suffix.lower() not in EXTENSIONS:
        raise DataError(f"unsupported file type '{given.suffix or given.name}'", where=text,
                        fix=f"use a file of type {supported}")
    return source_from_config(SourceConfig(path=text), Path.cwd())


def detect_kind(path: Path) -> str:
    """The source kind for a file (by extension) or a folder (by the files inside)."""
    supported = ", ".join(sorted(EXTENSIONS))
    if path.is_dir():
        kinds = sorted(
            {
                EXTENSIONS[p.suffix.lower()]
                for p in visible_files(path)
                if p.suffix.lower() in EXTENSIONS
            }
        )
        if not kinds:
            raise DataError(
                "folder holds no data files", where=str(path), fix=f"add files of type {supported}"
            )
        if len(kinds) > 1:
            raise DataError(
                f"folder mixes {' and '.join(kinds)} files",
                where=str(path),
                fix="keep one kind of file in it or set data.source.type",
            )
        return kinds[0]
    if not path.exists():
        raise DataError("file not found", where=str(path), fix=PATH_FIX)
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"unsupported file type '{path.suffix or path.name}'",
            where=str(path),
            fix=f"use one of {supported} or set data.source.type",
        )
    return kind


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base_dir / p


def _file_factory(cls: type[FileSource]) -> SourceFactory:
    def build(cfg: SourceConfig, base_dir: Path) -> Source:
        if cfg.path is None:
            raise DataError("needs path (a file or folder of data)", where="data.source.path")
        path = _resolve(cfg.path, base_dir)
        if issubclass(cls, CsvSource):
            return cls(path, delimiter=cfg.delimiter, max_columns=cfg.max_columns)
        return cls(path, max_columns=cfg.max_columns)

    return build


def _sql_factory(cfg: SourceConfig, base_dir: Path) -> Source:
    from dataflywheel.data.sql_source import sql_source_from_config

    return sql_source_from_config(cfg, base_dir)


def _sklearn_factory(cfg: SourceConfig, base_dir: Path) -> Source:
    from dataflywheel.data.examples import SklearnSource

    return SklearnSource(cfg.name or "")


_FILE_SOURCES: tuple[type[FileSource], ...] = (TsvSource, CsvSource, JsonlSource, ParquetSource)
# extension -> kind, for type "auto" (.txt is csv: its delimiter is sniffed)
EXTENSIONS: dict[str, str] = {e: cls.kind for cls in _FILE_SOURCES for e in cls.extensions}
for _cls in _FILE_SOURCES:
    register_source(_cls.kind, _file_factory(_cls))
register_source("sql", _sql_factory)
register_source("sklearn", _sklearn_factory)
