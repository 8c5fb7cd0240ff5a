"""Where raw data comes from: one :class:`Source` interface and one registry of source kinds.

A source reads a whole table into a polars frame and fingerprints the bytes it came from, so
a dataset version can say exactly what it was built from. Sources only read: they never write
or create a file (not even an SQLite database at a mistyped path).

Every failure the user can fix is a one-line :class:`~dataflywheel.errors.DataError` naming the
file (and line) and the fix. A numeric column holding a stray non-numeric string still loads, as
a string column; the processing stage coerces it and counts the failures.
"""

from __future__ import annotations

import csv
import hashlib
import json
import mmap
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl

from dataflywheel.config import SourceConfig
from dataflywheel.errors import DataError

SourceFactory = Callable[[SourceConfig, Path], "Source"]
MAX_COLUMNS: int = SourceConfig.model_fields["max_columns"].default


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


class FileSource(Source):
    """A file, or a folder of files of one kind (read in sorted order and stacked)."""

    extensions: ClassVar[tuple[str, ...]]

    def __init__(self, path: str | Path, max_columns: int = MAX_COLUMNS) -> None:
        self.path = Path(path)
        self.max_columns = max_columns

    def check_width(self, path: Path, n_columns: int) -> None:
        """Raise :class:`DataError` when ``path`` has more than ``max_columns`` columns."""
        if n_columns > self.max_columns:
            raise DataError(
                f"has more columns than data.source.max_columns ({self.max_columns:,})",
                where=str(path),
                fix="raise data.source.max_columns (flywheel init --max-columns) if memory allows "
                "(a few KB per column), or keep fewer columns",
            )

    def describe(self) -> str:
        return str(self.path)

    def files(self) -> list[Path]:
        """The data files behind this source: the file itself or the folder's matching files."""
        if self.path.is_file():
            return [self.path]
        if not self.path.exists():
            raise DataError("file not found", where=str(self.path), fix=_PATH_FIX)
        found = [p for p in _visible_files(self.path) if p.suffix.lower() in self.extensions]
        if not found:
            raise DataError(
                f"folder holds no {self.kind} files ({', '.join(self.extensions)})",
                where=str(self.path),
                fix="add data files or point data.source.path at a file",
            )
        return found

    def read(self) -> pl.DataFrame:
        frames: list[tuple[Path, pl.DataFrame]] = []
        for f in self.files():
            if f.stat().st_size == 0:
                raise DataError("file is empty", where=str(f), fix="export the data again")
            df = self.read_file(f)
            if df.height == 0:
                raise DataError("file has no rows", where=str(f), fix="export the data again")
            frames.append((f, df))
        return _stack(frames)

    @abstractmethod
    def read_file(self, path: Path) -> pl.DataFrame:
        """Read one non-empty file of this kind."""

    def fingerprint(self) -> str:
        """A file: sha256 of its bytes. A folder: sha256 over each file's relative name and
        bytes' sha256, in sorted order (renaming a file changes the fingerprint)."""
        files = self.files()
        if self.path.is_file():
            return _file_sha256(self.path).hex()
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.relative_to(self.path).as_posix().encode() + b"\0")
            digest.update(_file_sha256(f))
        return digest.hexdigest()


class CsvSource(FileSource):
    """Delimited text. The delimiter is the one given, else the kind's default (``,`` for csv,
    tab for tsv); a ``.txt`` file, or a header with none of the default, is sniffed among
    ``, TAB ; |``. Quoted fields may hold the delimiter, quotes (doubled) and newlines. A row
    with more or fewer fields than the header is an error naming its line; a blank line is not a
    row with too few fields (polars reads it as a row of nulls)."""

    kind = "csv"
    extensions: ClassVar[tuple[str, ...]] = (".csv", ".txt")
    default_delimiter = ","

    def __init__(self, path: str | Path, delimiter: str | None = None, max_columns: int = MAX_COLUMNS) -> None:
        super().__init__(path, max_columns)
        if delimiter is not None and len(delimiter.encode()) != 1:
            raise DataError(
                f"delimiter must be one character (got {delimiter!r})",
                where="data.source.delimiter",
                fix="use e.g. ',' or '\\t'",
            )
        self.delimiter = delimiter

    def separator(self, path: Path) -> str:
        if self.delimiter is not None:
            return self.delimiter
        with open(path, "rb") as fh:
            header = fh.readline(64 * 1024).decode("utf-8", errors="replace")
        if path.suffix.lower() != ".txt" and self.default_delimiter in header:
            return self.default_delimiter
        counts = {d: header.count(d) for d in (",", "\t", ";", "|")}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else self.default_delimiter

    def read_file(self, path: Path) -> pl.DataFrame:
        """Parse with polars. Polars rejects long rows itself but pads short ones with nulls,
        so only a file whose last column holds a null pays for a vectorised field count."""
        sep = self.separator(path)
        self.check_width(path, _header_fields(path, sep, self.max_columns))
        df = self._parse(path, sep)
        padded = df.width > 1 and df[df.columns[-1]].null_count() > 0
        if padded and not _fields_agree(path, sep, df.width):
            error = _ragged_error(path, sep)
            if error is not None:
                raise error
        return df

    def _parse(self, path: Path, sep: str) -> pl.DataFrame:
        overrides: dict[str, type[pl.DataType]] = {}
        full_inference = False
        while True:
            try:
                return pl.read_csv(
                    path,
                    separator=sep,
                    infer_schema_length=None if full_inference else 10_000,
                    schema_overrides=overrides or None,
                    truncate_ragged_lines=False,
                )
            except pl.exceptions.NoDataError:
                raise DataError(
                    "file is empty", where=str(path), fix="export the data again"
                ) from None
            except pl.exceptions.PolarsError as exc:
                text = str(exc)
                if "more fields" in text:
                    raise _ragged_error(path, sep) or DataError(
                        "rows have more fields than the header",
                        where=str(path),
                        fix="fix the ragged rows",
                    ) from None
                bad = _UNPARSED.search(text)
                if bad and not full_inference:
                    full_inference = True  # a late stray value: infer from every row instead
                elif bad and bad.group(1) not in overrides:
                    overrides[bad.group(1)] = pl.String
                else:
                    raise _read_error(path, "CSV", text) from None


class TsvSource(CsvSource):
    kind = "tsv"
    extensions = (".tsv", ".tab", ".txt")
    default_delimiter = "\t"


class JsonlSource(FileSource):
    """One JSON object per line; blank lines are skipped. Types are inferred from every line."""

    kind = "jsonl"
    extensions = (".jsonl", ".ndjson")

    def read_file(self, path: Path) -> pl.DataFrame:
        try:
            return pl.read_ndjson(path, infer_schema_length=None)
        except pl.exceptions.PolarsError as exc:
            raise _json_error(path) or _read_error(path, "JSON lines", str(exc)) from None


class ParquetSource(FileSource):
    kind = "parquet"
    extensions = (".parquet", ".pq")

    def read_file(self, path: Path) -> pl.DataFrame:
        try:
            self.check_width(path, len(pl.read_parquet_schema(path)))
            return pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise _read_error(path, "Parquet", str(exc)) from None


# --- registry -------------------------------------------------------------------------------

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
                for p in _visible_files(path)
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
        raise DataError("file not found", where=str(path), fix=_PATH_FIX)
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


# --- helpers --------------------------------------------------------------------------------

_PATH_FIX = "check data.source.path (relative paths start at flywheel.yaml's folder)"
_CHUNK = 1 << 23  # bytes per vectorised step of the field-count check
_LF, _CR, _QUOTE = ord("\n"), ord("\r"), ord('"')
_UNPARSED = re.compile(r"could not parse `.*?` as dtype `.*?` at column '(.+?)'", re.DOTALL)


def _file_sha256(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").digest()


def _visible_files(folder: Path) -> list[Path]:
    """Files under ``folder`` in sorted order, skipping hidden and marker files (``.x``, ``_x``)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts)
    )


def _stack(frames: list[tuple[Path, pl.DataFrame]]) -> pl.DataFrame:
    first_path, first = frames[0]
    for path, df in frames[1:]:
        if df.columns != first.columns:
            missing = [c for c in first.columns if c not in df.columns]
            extra = [c for c in df.columns if c not in first.columns]
            raise DataError(
                f"columns differ from {first_path.name}'s (missing {missing}, extra {extra})",
                where=str(path),
                fix="give every file in the folder the same header",
            )
    if len(frames) == 1:
        return first
    try:
        return pl.concat([df for _, df in frames], how="vertical_relaxed")
    except pl.exceptions.PolarsError as exc:
        raise DataError(
            f"files cannot be stacked: {_first_line(str(exc))}", where=str(first_path.parent)
        ) from None


def _header_fields(path: Path, sep: str, limit: int) -> int:
    """Fields in the first record (delimiters outside quotes, plus one), read 1 MiB at a time;
    counting stops once it passes ``limit``, so a huge one-line file costs no memory."""
    delim = ord(sep)
    fields, quoted = 1, 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            data = np.frombuffer(chunk, dtype=np.uint8)
            inside = (np.cumsum(data == _QUOTE) + quoted) % 2 == 1  # a quote toggles; RFC 4180
            ends = np.flatnonzero((data == _LF) & ~inside)
            if ends.size:
                data, inside = data[: ends[0]], inside[: ends[0]]
            fields += int(np.count_nonzero((data == delim) & ~inside))
            if ends.size or fields > limit:
                break
            quoted = int(inside[-1])
    return fields


def _fields_agree(path: Path, sep: str, width: int) -> bool:
    """Whether every non-blank record has ``width`` fields, given that none has more.

    Vectorised over the raw bytes, chunk by chunk: the delimiters outside quotes must number
    ``width - 1`` per non-blank record (header included). A quote toggles quoting (RFC 4180; a
    doubled quote toggles twice); only chunks holding a quote pay for tracking it. ``False`` on
    odd quoting may be a false alarm, so :func:`_ragged_error` has the last word.
    """
    with open(path, "rb") as fh:
        raw = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    data = np.frombuffer(raw, dtype=np.uint8)
    delim = ord(sep)
    delims = records = blanks = parity = 0
    last_end = -1  # the newline that ends the previous record
    for start in range(0, data.size, _CHUNK):
        stop = start + _CHUNK
        chunk = data[start:stop]
        is_delim = chunk == delim
        delims += int(np.count_nonzero(is_delim))
        ends = np.flatnonzero(chunk == _LF)
        if parity or raw.find(b'"', start, stop) >= 0:
            quotes = np.flatnonzero(chunk == _QUOTE)
            ends = ends[(np.searchsorted(quotes, ends) + parity) % 2 == 0]
            opened = [0] if parity else []  # quoted spans: (bounds[0], bounds[1]), ...
            parity = (parity + quotes.size) % 2
            closed = [chunk.size] if parity else []
            bounds = np.concatenate([opened, quotes, closed]).astype(np.int64)
            delims -= _count_within(is_delim, bounds[0::2], bounds[1::2])
        ends += start
        gaps = np.diff(ends, prepend=last_end)
        blanks += int(np.count_nonzero((gaps == 1) | ((gaps == 2) & (data[ends - 1] == _CR))))
        records += ends.size
        last_end = int(ends[-1]) if ends.size else last_end
    tail = data[last_end + 1 :]
    records += int(tail.size > 1 or (tail.size == 1 and tail[0] != _CR))
    return delims == (width - 1) * (records - blanks)


def _count_within(mask: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> int:
    """How many of ``mask`` are set within the spans ``[starts[i], ends[i])``."""
    lengths = ends - starts
    total = int(lengths.sum())
    if total > mask.size // 4:  # long spans: locate every set position once instead
        at = np.searchsorted(np.flatnonzero(mask), np.stack([starts, ends]))
        return int((at[1] - at[0]).sum())
    index = np.arange(total) + np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return int(np.count_nonzero(mask[index]))


def _ragged_error(path: Path, sep: str) -> DataError | None:
    """The first row whose field count differs from the header's, if any (error path only)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh, delimiter=sep)
        expected = len(next(reader, []))
        for row in reader:
            if row and len(row) != expected:
                return DataError(
                    f"expected {expected} fields, found {len(row)}",
                    where=f"{path} line {reader.line_num}",
                    fix=(
                        "fix the row or quote the field containing the delimiter"
                        if len(row) > expected
                        else "fix the row: give it every field, leaving a missing value empty"
                    ),
                )
    return None


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


def _read_error(path: Path, what: str, text: str) -> DataError:
    if "utf-8" in text.lower() or "utf8" in text.lower():
        return DataError("not UTF-8 text", where=str(path), fix="save the file as UTF-8")
    return DataError(
        f"cannot read as {what}: {_first_line(text)}",
        where=str(path),
        fix="check that the file is intact",
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
