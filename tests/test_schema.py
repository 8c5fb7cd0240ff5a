from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dataflywheel.data.examples import load_example
from dataflywheel.data.schema import (
    ColumnSchema,
    Schema,
    category_strings,
    infer_schema,
    infer_task,
)
from dataflywheel.errors import DataError, SchemaError

RNG = np.random.default_rng(7)
N = 400


def _types(df: pl.DataFrame, target: str | None = None) -> dict[str, str]:
    return {c.name: c.type for c in infer_schema(df, target=target).columns}


def test_inference_rules() -> None:
    words = [f"word{i} " * 20 for i in range(N)]
    df = pl.DataFrame(
        {
            "flag": RNG.random(N) > 0.5,
            "two_ints": RNG.choice([3, 7], N),
            "x": RNG.normal(size=N),
            "small_int": RNG.integers(0, 5, N),
            "when": pl.date_range(
                dt.date(2020, 1, 1), dt.date(2020, 1, 1) + dt.timedelta(days=N - 1), eager=True
            ),
            "when_str": [f"2021-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(N)],
            "colour": RNG.choice(["red", "green", "blue"], N),
            "code": [f"c{i % 30}" for i in range(N)],  # 30 values > max(20, 5% of 400)
            "note": words,
        }
    )
    assert _types(df) == {
        "flag": "binary",
        "two_ints": "binary",
        "x": "number",
        "small_int": "number",
        "when": "datetime",
        "when_str": "datetime",
        "colour": "category",
        "code": "text",
        "note": "text",
    }
    many = pl.DataFrame({"code": [f"c{i % 30}" for i in range(1000)]})
    assert _types(many) == {"code": "category"}  # 30 <= 5% of 1000 rows


def test_integer_target_with_few_values_is_a_category() -> None:
    df = pl.DataFrame(
        {"y": RNG.integers(0, 5, N), "z": RNG.integers(0, 50, N), "f": RNG.integers(0, 5, N)}
    )
    assert _types(df, target="y")["y"] == "category"
    assert _types(df, target="z")["z"] == "number"
    assert _types(df, target="y")["f"] == "number"
    schema = infer_schema(df, target="y")
    assert schema.column("y").categories == [str(v) for v in sorted(set(df["y"].to_list()))]


def test_number_statistics_match_numpy_and_skip_missing() -> None:
    x = RNG.normal(5, 2, N)
    x[:10] = np.nan
    x[10] = np.inf
    values: list[float | None] = x.tolist()
    values[11] = None
    col = infer_schema(pl.DataFrame({"x": values})).column("x")
    finite = x[12:]
    assert col.missing_rate == pytest.approx(11 / N)
    assert col.min == pytest.approx(finite.min()) and col.max == pytest.approx(finite.max())
    assert col.mean == pytest.approx(finite.mean()) and col.std == pytest.approx(finite.std())


def test_numeric_strings_with_stray_values_are_numbers_and_count_failures() -> None:
    values = [str(v) for v in RNG.normal(size=N).round(3)]
    values[5] = "n/a"
    values[9] = "12,5"
    col = infer_schema(pl.DataFrame({"v": values})).column("v")
    assert (col.type, col.dtype, col.coercible_failures) == ("number", "String", 2)
    parsed = [float(v) for i, v in enumerate(values) if i not in (5, 9)]
    assert col.min == pytest.approx(min(parsed)) and col.mean == pytest.approx(np.mean(parsed))
    mostly_text = values[:]
    for i in range(0, N, 10):
        mostly_text[i] = f"label{i}"
    assert infer_schema(pl.DataFrame({"v": mostly_text})).column("v").type == "text"


def test_datetime_strings_record_epoch_seconds() -> None:
    col = infer_schema(
        pl.DataFrame({"d": ["2024-01-02 03:04:05", None, "2024-01-01", "2024-03-01"]})
    ).column("d")
    assert col.type == "datetime" and col.missing_rate == 0.25
    assert col.min == dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()
    assert col.max == dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp()


def test_categories_are_sorted_strings() -> None:
    df = pl.DataFrame(
        {
            "c": ["b", "a", None, "c", "a"],
            "f": [2.0, 1.0, 3.0, None, 1.0],
            "t": [True, None, False, True, True],
        }
    )
    schema = infer_schema(df, target="f", overrides={"f": "category"})
    assert schema.column("c").categories == ["a", "b", "c"]
    assert schema.column("f").categories == ["1", "2", "3"]
    assert schema.column("t").categories == ["false", "true"]
    assert schema.column("c").n_unique == 3 and schema.column("c").missing_rate == pytest.approx(
        0.2
    )


def test_all_missing_column_is_an_empty_category() -> None:
    col = infer_schema(pl.DataFrame({"e": pl.Series([None, None], dtype=pl.String)})).column("e")
    assert (col.type, col.missing_rate, col.categories) == ("category", 1.0, [])


def test_overrides_replace_the_rules_and_must_name_columns() -> None:
    df = pl.DataFrame({"zip": ["01234", "99999", "01234"], "x": [1.0, 2.0, 3.0]})
    schema = infer_schema(df, overrides={"zip": "text", "x": "category"})
    assert schema.column("zip").type == "text" and schema.column("x").categories == ["1", "2", "3"]
    with pytest.raises(
        SchemaError, match="zipcode: a feature override names a column not in the data"
    ):
        infer_schema(df, overrides={"zipcode": "text"})


def test_missing_target_names_it_and_lists_columns() -> None:
    df = pl.DataFrame({"a": [1], "b": [2]})
    with pytest.raises(SchemaError) as err:
        infer_schema(df, target="label")
    assert err.value.where == "label" and "a, b" in str(err.value)


def test_nested_columns_are_rejected() -> None:
    with pytest.raises(SchemaError, match="tags: unsupported column dtype"):
        infer_schema(pl.DataFrame({"tags": [[1, 2], [3]]}))


def test_unicode_names_and_accessors() -> None:
    df = pl.DataFrame({"prénom": ["é", "ü", "é"], "年齢": [1.5, 2.5, 3.5], "ラベル": [0, 1, 1]})
    schema = infer_schema(df, target="ラベル")
    assert schema.names == ["prénom", "年齢", "ラベル"]
    assert [c.name for c in schema.features] == ["prénom", "年齢"]
    assert schema.column("年齢").type == "number" and schema.n_rows == 3
    with pytest.raises(SchemaError, match="nope: no such column"):
        schema.column("nope")


def test_save_load_roundtrip_is_atomic(tmp_path: Path) -> None:
    df = load_example("iris").with_columns(pl.lit("é").alias("ü"))
    schema = infer_schema(df, target="target")
    path = tmp_path / "schema.json"
    path.write_text("old")
    schema.save(path)
    assert Schema.load(path) == schema
    assert Schema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema
    assert [p.name for p in tmp_path.iterdir()] == ["schema.json"]


def test_save_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    bad = Schema([ColumnSchema("x", "number", "Float64", 0.0, min=float("nan"))])
    with pytest.raises(ValueError):
        bad.save(tmp_path / "s.json")
    assert list(tmp_path.iterdir()) == []


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="schema file not found"):
        Schema.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SchemaError, match="not valid JSON"):
        Schema.load(tmp_path / "bad.json")
    (tmp_path / "odd.json").write_text(json.dumps({"columns": [{"name": "x", "colour": "red"}]}))
    with pytest.raises(SchemaError, match=r"odd\.json: not a valid schema"):
        Schema.load(tmp_path / "odd.json")


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("breast_cancer", "binary"),
        ("iris", "multiclass"),
        ("wine", "multiclass"),
        ("diabetes", "regression"),
    ],
)
def test_infer_task_on_examples(name: str, task: str) -> None:
    schema = infer_schema(load_example(name), target="target")
    assert infer_task(schema.column("target")) == task


def test_text_target_has_no_task() -> None:
    with pytest.raises(SchemaError, match="a text column cannot be a target"):
        infer_task(ColumnSchema("t", "text", "String", 0.0))


def test_category_strings_print_whole_floats_as_integers() -> None:
    assert category_strings(pl.Series([1.0, 2.0, None])).to_list() == ["1", "2", None]
    assert category_strings(pl.Series([1.5, 2.0])).to_list() == ["1.5", "2.0"]
    assert category_strings(pl.Series([3, 4])).to_list() == ["3", "4"]


def test_many_number_columns_at_once_match_the_one_column_rules() -> None:
    """Integer and float columns are summarised in numpy blocks; each column's schema equals the
    one the per-column rules give (statistics to float rounding)."""
    from dataflywheel.data.schema import inference as schema_module

    n = 50
    x = RNG.normal(size=n)
    x[3], x[4] = np.nan, np.inf
    cols = {
        "f": x, "i": RNG.integers(-5, 5, n), "bin_i": RNG.choice([0, 1], n), "bin_f": RNG.choice([0.5, 1.5], n),
        "bin_f32": pl.Series(RNG.choice([0.1, 0.2], n)).cast(pl.Float32), "bin_whole": RNG.choice([2.0, 7.0], n),
        "with_null": pl.Series([None, *RNG.integers(0, 9, n - 1)]), "all_null": pl.Series([None] * n, dtype=pl.Float64),
        "bin_inf": RNG.choice([1.0, np.inf], n), "big": pl.Series([2**60, 2**60 + 1] * (n // 2), dtype=pl.Int64),
        "u8": pl.Series(RNG.integers(0, 200, n)).cast(pl.UInt8),
    }
    df = pl.DataFrame(cols).with_columns(declared=pl.col("bin_i"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(schema_module, "NUMERIC_BLOCK_CELLS", 3 * n)  # several blocks
        got = {c.name: c for c in infer_schema(df, overrides={"declared": "number"}).columns}
    assert got["declared"].type == "number" and got["bin_i"].type == "binary"
    for name in df.columns:
        present = df[name].drop_nulls()
        present = present.drop_nans() if present.dtype.is_float() else present
        forced = "number" if name == "declared" else None
        want = schema_module._infer_column(df[name], n, False, forced, present.n_unique())
        have = got[name]
        for key in ("mean", "std"):
            if getattr(want, key) is not None:
                assert getattr(have, key) == pytest.approx(getattr(want, key), rel=1e-12), (name, key)
                setattr(have, key, getattr(want, key))
        assert have == want, name

