"""Parquet files, their width checked from the schema before the data is read."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from dataflywheel.data.file_source import FileSource, read_error


class ParquetSource(FileSource):
    kind = "parquet"
    extensions = (".parquet", ".pq")

    def read_file(self, path: Path) -> pl.DataFrame:
        try:
            self.check_width(path, len(pl.read_parquet_schema(path)))
            return pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise read_error(path, "Parquet", str(exc)) from None
