"""Request records: a datetime field takes a date or time, nothing else (a 422 naming it)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dataflywheel.data.schema import ColumnSchema, Schema
from dataflywheel.serve.schemas import record_model


def test_datetime_fields_take_dates_and_times_only() -> None:
    schema = Schema([ColumnSchema("opened", "datetime", "String", 0.0), ColumnSchema("y", "category", "Int64", 0.0)],
                    target="y")
    Record = record_model(schema)
    for ok in ("2024-05-01", "2024-05-01T13:45:00", "2024-05-01 13:45", "01/05/2024", " 2024-05-01 ", None):
        assert Record.model_validate({"opened": ok}).model_dump() == {"opened": ok}
    for bad in ("not a date", 12345, "2024-13-45", "", True):
        with pytest.raises(ValidationError) as info:
            Record.model_validate({"opened": bad})
        assert info.value.errors()[0]["loc"] == ("opened",), bad


def test_the_fast_date_check_agrees_with_the_format_free_reading() -> None:
    """The request check reads a value as a date exactly when polars reads it in one of the
    formats a datetime column may have (the encoder's reading before it learns one format)."""
    import polars as pl

    from dataflywheel.features.datetimes import _epoch_seconds, readable_datetime

    values = ["2024-05-01", "2024-05-01T13:45:00", "2024-05-01 13:45", "2024-05-01T13:45:00.250",
              "2024-05-01T13:45:00+02:00", "01/05/2024", "2024/05/01", "01.05.2024", " 2024-05-01 ",
              "not a date", "12345", "2024-13-45", "2024-02-30", "20240501", "", "13:45", "2024-05-01T13",
              "2024-05-01T1345", "2024-05-01T13:45:00Z", "2024-05-01 13:45:00+0200"]
    for value in values:
        reads = _epoch_seconds(pl.Series("d", [value], dtype=pl.String), None)[0] is not None
        assert readable_datetime(value) == reads, value
