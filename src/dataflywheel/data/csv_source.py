"""Delimited text (csv, tsv): the delimiter, the width check, and a vectorised field count that
finds a short row without a slow pass over a well-formed file."""

from __future__ import annotations

import csv
import mmap
import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl

from dataflywheel.data.file_source import MAX_COLUMNS, FileSource, read_error
from dataflywheel.errors import DataError

_CHUNK = 1 << 23  # bytes per vectorised step of the field-count check
_LF, _CR, _QUOTE = ord("\n"), ord("\r"), ord('"')
_UNPARSED = re.compile(r"could not parse `.*?` as dtype `.*?` at column '(.+?)'", re.DOTALL)


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
                    raise read_error(path, "CSV", text) from None


class TsvSource(CsvSource):
    kind = "tsv"
    extensions = (".tsv", ".tab", ".txt")
    default_delimiter = "\t"


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
