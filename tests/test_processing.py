"""The processing stage end to end on a generated messy table."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from dataflywheel.config import DataConfig
from dataflywheel.data.processing import process
from dataflywheel.data.schema import ColumnSchema, Schema
from dataflywheel.errors import DataError, SchemaError

TYPES = {
    "row": "number",
    "größe": "number",
    "年齢": "number",
    "farbe": "category",
    "notiz": "text",
    "ziel": "category",
}


def schema() -> Schema:
    return Schema([ColumnSchema(n, t, "str", 0.0) for n, t in TYPES.items()], target="ziel")


def messy(n: int = 400, seed: int = 0) -> pl.DataFrame:
    """Strings where numbers belong, gaps, a missing target, duplicated rows, an id to exclude."""
    rng = np.random.default_rng(seed)
    size = rng.normal(170, 10, n).round(1).astype(str).astype(object)
    size[rng.choice(n, 20, replace=False)] = None
    size[:3] = ["groß", "n/a?", "1,7"]  # unreadable
    age = rng.integers(18, 90, n).astype(float)
    age[rng.choice(n, 30, replace=False)] = np.nan
    age[5] = 10_000.0  # an outlier
    colour = rng.choice(["rot", "grün", "blau", None], n, p=[0.5, 0.3, 0.15, 0.05])
    target = rng.choice(["ja", "nein"], n, p=[0.2, 0.8]).astype(object)
    target[[7, 8]] = None
    df = pl.DataFrame(
        {
            "kunden_id": [f"K{i}" for i in range(n)],
            "row": np.arange(n, dtype=float),
            "größe": pl.Series(size, dtype=pl.String),
            "年齢": age,
            "farbe": colour,
            "notiz": ["…"] * n,
            "ziel": pl.Series(target, dtype=pl.String),
        }
    )
    dupes = df[10:25].with_columns(pl.col("kunden_id") + "dup")
    return pl.concat([df, dupes])


def config(**processing: object) -> DataConfig:
    return DataConfig.model_validate(
        {
            "source": "x.csv",
            "target": "ziel",
            "exclude": ["kunden_id", "not_there"],
            "processing": processing,
            "split": {"train": 0.6, "valid": 0.2, "test": 0.2, "seed": 1},
        }
    )


def test_process_cleans_splits_and_reports() -> None:
    raw = messy()
    out = process(raw, schema(), config(), task="binary")
    rep = out.report
    splits = out.splits
    assert set(splits) == {"train", "valid", "test"}
    assert rep["rows_in"] == 415
    assert rep["excluded"] == ["kunden_id"]
    assert rep["coercion_failures"] == {"größe": 3}
    assert rep["missing_target_dropped"] == 2
    assert (
        rep["duplicates_removed"] == 15
    )  # rows 10..24 once the id is excluded (7, 8 already gone)
    assert rep["rows_out"] == 398 == sum(rep["split_sizes"].values())
    assert rep["stratified"] is True
    assert all("kunden_id" not in s.columns for s in splits.values())
    for s in splits.values():
        assert s.select(pl.exclude("ziel")).null_count().sum_horizontal().item() == 0
        assert s.schema["größe"] == pl.Float64
        assert 0.15 < (s["ziel"] == "ja").mean() < 0.25  # type: ignore[operator]
    kept = raw.unique(subset=pl.exclude("kunden_id"), keep="first").drop_nulls("ziel")
    expected_filled = {
        "größe": int(kept["größe"].is_null().sum()) + 3,
        "年齢": int(kept["年齢"].is_nan().sum()),
        "farbe": int(kept["farbe"].is_null().sum()),
    }
    assert rep["missing_filled"] == expected_filled
    assert rep["missing_dropped"] == 0 and rep["cells_clipped"] == 0
    assert set(rep["leakage"]) == {"train/valid", "train/test", "valid/test"}


def test_missing_values_filled_with_train_median_only() -> None:
    raw = messy()
    splits = process(raw, schema(), config(), task="binary").splits
    gaps = raw.filter(pl.col("年齢").is_nan())["row"]
    train_median = splits["train"]["年齢"].median()  # unchanged by filling with the median
    test_gaps = splits["test"].filter(pl.col("row").is_in(gaps.implode()))
    assert test_gaps.height > 0
    assert test_gaps["年齢"].unique().to_list() == [train_median]


def test_clip_and_drop_strategies() -> None:
    cfg = config(clip_quantiles=[0.01, 0.99], missing={"category": "drop"})
    out = process(messy(), schema(), cfg, task="binary")
    rep = out.report
    assert rep["missing_dropped"] > 0
    assert rep["rows_out"] == 398 - rep["missing_dropped"]
    assert rep["cells_clipped"] > 0
    assert max(s["年齢"].max() for s in out.splits.values()) < 10_000  # type: ignore[operator]
    assert all(s["farbe"].null_count() == 0 for s in out.splits.values())


def test_leakage_counts_identical_feature_rows() -> None:
    df = pl.DataFrame({"a": [1.0, 2.0] * 50, "ziel": ["x", "y", "y", "x"] * 25})
    types = {"a": "number", "ziel": "category"}
    sch = Schema([ColumnSchema(n, t, "f", 0.0) for n, t in types.items()], target="ziel")
    out = process(df, sch, config(), task="multiclass")
    assert out.report["duplicates_removed"] == 96
    leakage = out.report["leakage"]
    train = set(out.splits["train"]["a"].to_list())
    assert leakage["train/test"] == sum(v in train for v in out.splits["test"]["a"].to_list())


def test_reject_and_missing_target_errors() -> None:
    with pytest.raises(DataError) as err:
        process(messy(), schema(), config(coerce="reject"), task="binary")
    assert err.value.where == "data row 1" and "größe" in err.value.message
    with pytest.raises(SchemaError, match="ziel"):
        process(messy().drop("ziel"), schema(), config(), task="binary")


def test_process_infers_task_from_schema() -> None:
    schema_mod = pytest.importorskip("dataflywheel.data.schema")
    raw = messy().drop_nulls("ziel")
    inferred = schema_mod.infer_schema(raw, target="ziel")
    out = process(raw, inferred, config(), where="x.csv")
    assert out.report["stratified"] is True
