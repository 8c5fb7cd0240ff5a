"""Cleaning: type coercion, exact duplicates, imputation and clipping on messy frames."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest

from dataflywheel.config import MissingConfig
from dataflywheel.data.cleaning import (
    Clipper,
    Imputer,
    coerce_types,
    drop_duplicates,
    unique_rows,
)
from dataflywheel.data.schema import ColumnSchema, Schema
from dataflywheel.errors import ConfigError, DataError, NotFittedError, SchemaError


def schema_of(types: dict[str, str], target: str | None = None) -> Schema:
    return Schema([ColumnSchema(n, t, "str", 0.0) for n, t in types.items()], target=target)


@pytest.fixture
def messy() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "größe": ["1.5", "abc", None, " 2 ", "nan", "7"],
            "年齢": [30, 41, None, 25, 30, 99],
            "farbe": [1, 2, None, 1, 3, 1],
            "when": ["2024-01-02", "2024-02-30", None, "2023-12-31 10:00", "2024-01-02", "x"],
            "untouched": ["a", "b", "c", "d", "e", "f"],
        }
    )


MESSY_TYPES = {"größe": "number", "年齢": "number", "farbe": "category", "when": "datetime"}


def test_coerce_casts_to_schema_types_and_counts_unreadable_cells(messy: pl.DataFrame) -> None:
    out, failures = coerce_types(messy, schema_of(MESSY_TYPES), "coerce", "data.csv")
    assert out.schema["größe"] == pl.Float64
    assert out.schema["年齢"] == pl.Float64
    assert out.schema["farbe"] == pl.String
    assert isinstance(out.schema["when"], pl.Datetime)
    assert out.schema["untouched"] == pl.String
    assert out["größe"].to_list() == [1.5, None, None, 2.0, None, 7.0]
    assert out["farbe"].to_list() == ["1", "2", None, "1", "3", "1"]
    assert out["when"][3] == datetime(2023, 12, 31, 10)
    # "nan" is a missing marker, not an unreadable number; cells missing before are not counted
    assert failures == {"größe": 1, "when": 2}
    assert messy["größe"][1] == "abc"  # input unchanged


def test_coerce_reject_names_row_column_and_value(messy: pl.DataFrame) -> None:
    with pytest.raises(DataError) as err:
        coerce_types(messy, schema_of(MESSY_TYPES), "reject", "data.csv")
    assert err.value.where == "data.csv row 2"
    assert "größe" in err.value.message and "'abc'" in err.value.message
    assert "data.processing.coerce: coerce" in (err.value.fix or "")


def test_coerce_whole_floats_read_as_integer_categories() -> None:
    df = pl.DataFrame({"klasse": [1.0, 2.0, None], "flag": [True, False, None]})
    out, _ = coerce_types(df, schema_of({"klasse": "category", "flag": "binary"}), "reject", "t")
    assert out.rows() == [("1", "true"), ("2", "false"), (None, None)]


def test_coerce_number_nan_becomes_missing() -> None:
    df = pl.DataFrame({"x": [1.0, float("nan"), None]})
    out, failures = coerce_types(df, schema_of({"x": "number"}), "reject", "t")
    assert out["x"].null_count() == 2 and failures == {}


def test_drop_duplicates_keeps_first_in_order() -> None:
    df = pl.DataFrame(
        {"a": [3, 1, 3, None, None, 2, 1], "名前": ["x", "y", "x", None, None, "z", "q"]}
    )
    out, n = drop_duplicates(df)
    assert n == 2
    assert out.rows() == [(3, "x"), (1, "y"), (None, None), (2, "z"), (1, "q")]
    assert unique_rows(df).to_list() == [True, True, False, True, False, True, True]
    assert unique_rows(out) is None and drop_duplicates(out) == (out, 0)


def frame_with_gaps() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "num": [1.0, 2.0, None, 10.0, 4.0, None],
            "cat": ["b", "a", "b", None, "a", "b"],
            "flag": ["yes", None, "no", "no", "no", "yes"],
            "y": [1.0, None, 0.0, 1.0, 0.0, 1.0],
        }
    )


GAP_TYPES = {"num": "number", "cat": "category", "flag": "binary", "y": "number"}


def test_imputer_fills_with_train_statistics_and_leaves_target() -> None:
    train = frame_with_gaps()
    imp = Imputer(schema_of(GAP_TYPES, "y"), MissingConfig(), target="y")
    assert imp.fit(train) is imp
    assert imp.fill_ == {"num": 3.0, "cat": "b", "flag": "no"}
    other = pl.DataFrame(
        {"num": [None, 5.0], "cat": [None, "zz"], "flag": [None, "yes"], "y": [None, 2.0]}
    )
    out, dropped = imp.transform(other)
    assert dropped == 0
    assert out.rows() == [(3.0, "b", "no", None), (5.0, "zz", "yes", 2.0)]
    assert other["num"].null_count() == 1  # input unchanged


def test_imputer_strategies_mean_constant_and_drop() -> None:
    train = frame_with_gaps()
    missing = MissingConfig(number="mean", category="constant", binary="drop", constant="?")
    with pytest.raises(ConfigError):  # "?" cannot fill a number column
        Imputer(schema_of(GAP_TYPES), MissingConfig(number="constant", constant="?")).fit(train)
    imp = Imputer(schema_of(GAP_TYPES, "y"), missing, target="y").fit(train)
    out, dropped = imp.transform(train)
    assert dropped == 1  # the row missing "flag"
    assert out["num"].to_list() == [1.0, 4.25, 10.0, 4.0, 4.25]
    assert out["cat"].to_list() == ["b", "b", "?", "a", "b"]


def test_imputer_drops_rows_only_for_columns_the_model_reads() -> None:
    train = pl.DataFrame({"num": [1.0, None, 3.0], "notes": ["a b", None, "c d"], "y": [0, 1, 0]})
    schema = schema_of({"num": "number", "notes": "text", "y": "category"}, "y")
    reads = Imputer(schema, MissingConfig(), target="y").fit(train)
    assert reads.drop_counts(train) == {"notes": 1}
    assert reads.transform(train)[1] == 1
    skips = Imputer(schema, MissingConfig(), target="y", inputs=["num"]).fit(train)
    out, dropped = skips.transform(train)
    assert dropped == 0 and skips.drop_counts(train) == {}
    assert out["notes"].to_list() == ["a b", None, "c d"] and out["num"].to_list() == [1.0, 2.0, 3.0]


def test_imputer_column_entirely_missing_falls_back_to_constant() -> None:
    df = pl.DataFrame({"x": pl.Series([None, None], dtype=pl.Float64)})
    imp = Imputer(schema_of({"x": "number"}), MissingConfig(constant=-1.0)).fit(df)
    assert imp.transform(df)[0]["x"].to_list() == [-1.0, -1.0]


def test_imputer_unfitted_and_missing_column() -> None:
    imp = Imputer(schema_of(GAP_TYPES), MissingConfig())
    with pytest.raises(NotFittedError, match="Imputer"):
        imp.transform(frame_with_gaps())
    imp.fit(frame_with_gaps())
    with pytest.raises(SchemaError, match="num"):
        imp.transform(frame_with_gaps().drop("num"))


def test_clipper_uses_fitted_quantiles_and_counts_cells() -> None:
    train = pl.DataFrame({"a": [float(i) for i in range(101)], "b": [1.0] * 100 + [None]})
    clip = Clipper(["a", "b"], (0.1, 0.9))
    assert clip.fit(train) is clip
    assert clip.bounds_["a"] == pytest.approx((10.0, 90.0))
    test = pl.DataFrame({"a": [-5.0, 50.0, 500.0, None], "b": [0.0, 1.0, 2.0, 3.0]})
    out, n = clip.transform(test)
    assert n == 5  # -5 and 500 in a; 0, 2 and 3 in b
    assert out["a"].to_list() == [10.0, 50.0, 90.0, None]
    assert out["b"].to_list() == [1.0, 1.0, 1.0, 1.0]
    with pytest.raises(NotFittedError):
        Clipper(["a"], (0.1, 0.9)).transform(test)


def test_unreadable_datetime_text_is_counted_not_raised() -> None:
    from dataflywheel.data.cleaning import coerce_types
    from dataflywheel.data.schema import infer_schema

    train = pl.DataFrame({"d": ["2024-01-05", "2024-02-03", "2023-12-01", None] * 10, "y": [0, 1] * 20})
    schema = infer_schema(train, "y")
    out, failures = coerce_types(pl.DataFrame({"d": ["yesterday", "tomorrow"], "y": [0, 1]}), schema,
                                 "coerce", "batch.csv")
    assert out.get_column("d").null_count() == 2 and failures == {"d": 2}
    alone, _ = coerce_types(pl.DataFrame({"d": ["2024-03-04"], "y": [1]}), schema, "coerce", "x")
    mixed, _ = coerce_types(pl.DataFrame({"d": ["2024-03-04", "soon"], "y": [1, 0]}), schema, "coerce", "x")
    assert alone.get_column("d")[0] == mixed.get_column("d")[0]


def test_transform_owned_equals_transform_and_consumes_its_input() -> None:
    from dataflywheel.config import MissingConfig
    from dataflywheel.data.cleaning import Imputer
    from dataflywheel.data.schema import infer_schema

    df = pl.DataFrame({"a": [1.0, None, 3.0, 4.0] * 10, "b": ["x", None, "y", "x"] * 10, "y": [0, 1] * 20})
    imputer = Imputer(infer_schema(df, "y"), MissingConfig(), target="y").fit(df)
    expected, _ = imputer.transform(df)
    frames = [df.clone()]
    got, dropped = imputer.transform_owned(frames)
    assert frames == [] and dropped == 0
    assert got.equals(expected)
