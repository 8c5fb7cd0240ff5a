"""What the file sources share: a file or a folder of files of one kind, read one file at a time,
stacked, and fingerprinted by their bytes. Each kind (:mod:`.csv_source`, :mod:`.jsonl_source`,
:mod:`.parquet_source`) only reads one file."""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

import polars as pl

from dataflywheel.config import SourceConfig
from dataflywheel.data.source import Source
from dataflywheel.errors import DataError

MAX_COLUMNS: int = SourceConfig.model_fields["max_columns"].default
PATH_FIX = "check data.source.path (relative paths start at flywheel.yaml's folder)"


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
            raise DataError("file not found", where=str(self.path), fix=PATH_FIX)
        found = [p for p in visible_files(self.path) if p.suffix.lower() in self.extensions]
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


def _file_sha256(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").digest()


def visible_files(folder: Path) -> list[Path]:
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


def read_error(path: Path, what: str, text: str) -> DataError:
    """The one-line error for a file that polars cannot read as ``what``, from its message."""
    if "utf-8" in text.lower() or "utf8" in text.lower():
        return DataError("not UTF-8 text", where=str(path), fix="save the file as UTF-8")
    return DataError(
        f"cannot read as {what}: {_first_line(text)}",
        where=str(path),
        fix="check that the file is intact",
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
