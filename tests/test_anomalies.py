from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from dataflywheel.config import AnomalyPolicy
from dataflywheel.data.anomalies import ValidationReport, validate_batch
from dataflywheel.data.schema import infer_schema

N = 200


def _train(seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "âge": rng.integers(18, 90, N),
            "revenu €": rng.normal(1000, 100, N),
            "ville": rng.choice(["Paris", "Zürich", "東京"], N),
            "vip": rng.random(N) > 0.5,
            "signup": [f"2023-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(N)],
            "label": rng.integers(0, 3, N),
        }
    )


@pytest.fixture
def train() -> pl.DataFrame:
    return _train()


def _kinds(report: ValidationReport) -> dict[tuple[str, str | None], str]:
    return {(a.kind, a.column): a.severity for a in report.anomalies}


def _messy(seed: int) -> pl.DataFrame:
    """Random frames with duplicates, missing cells, stray strings and unicode names."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    nums: list[str | None] = [str(v) for v in rng.normal(size=n).round(2)]
    for i in rng.choice(n, size=max(1, n // 50), replace=False):
        nums[i] = rng.choice(["?", "n/a", "—"])
    for i in rng.choice(n, size=n // 5, replace=False):
        nums[i] = None
    floats = rng.normal(size=n)
    floats[rng.random(n) < 0.1] = np.nan
    df = pl.DataFrame(
        {
            "nombre ñ": nums,
            "x": floats,
            "cat": rng.choice(["a", "b", "c", "d", ""], n).tolist(),
            "ints": rng.integers(-5, 5, n),
            "flag": rng.choice([True, False], n),
        }
    )
    return pl.concat([df, df.head(n // 3)])  # duplicates


@pytest.mark.parametrize("seed", range(12))
def test_a_schema_accepts_the_data_it_was_inferred_from(seed: int) -> None:
    df = _messy(seed)
    report = validate_batch(df, infer_schema(df))
    assert report.anomalies == [] and not report.failed and report.n_rows == df.height


@pytest.mark.parametrize("seed", range(6))
def test_messy_batches_against_a_clean_schema(seed: int) -> None:
    clean = _messy(100 + seed).with_columns(pl.col("nombre ñ").str.replace_all(r"^[^0-9-].*$", "0"))
    batch = _messy(seed)
    kinds = _kinds(validate_batch(batch, infer_schema(clean)))
    assert kinds.get(("type_change", "nombre ñ")) == "fail"  # stray strings the schema never saw


def test_clean_batch_has_no_anomalies(train: pl.DataFrame) -> None:
    report = validate_batch(train.sample(50, seed=1), infer_schema(train, target="label"))
    assert report.anomalies == [] and report.summary() == "50 rows: no anomalies"


def test_every_kind_with_default_severities(train: pl.DataFrame) -> None:
    schema = infer_schema(train, target="label")
    batch = (
        train.head(20)
        .with_columns(
            pl.when(pl.int_range(20) < 3).then(200).otherwise(pl.col("âge")).alias("âge"),
            pl.when(pl.int_range(20) < 2)
            .then(pl.lit("Lyon"))
            .otherwise(pl.col("ville"))
            .alias("ville"),
            pl.when(pl.int_range(20) < 10)
            .then(None)
            .otherwise(pl.col("revenu €"))
            .alias("revenu €"),
            pl.lit("soon").alias("signup"),
            pl.lit(1).alias("extra"),
        )
        .drop("vip")
    )
    report = validate_batch(batch, schema)
    assert _kinds(report) == {
        ("missing_column", "vip"): "fail",
        ("extra_column", "extra"): "warn",
        ("type_change", "signup"): "fail",
        ("out_of_range", "âge"): "warn",
        ("unseen_category", "ville"): "warn",
        ("missing_jump", "revenu €"): "warn",
    }
    assert report.failed
    by_kind = {a.kind: a.detail for a in report.anomalies}
    assert by_kind["out_of_range"].startswith("3 values outside [")
    assert by_kind["unseen_category"] == "2 values not seen in training (e.g. 'Lyon')"
    assert by_kind["missing_jump"] == "missing rate rose from 0.0% to 50.0%"
    lines = report.summary().splitlines()
    assert lines[0] == "20 rows: 6 anomalies (2 fail, 4 warn)"
    assert lines[1].split()[0] == "FAIL" and len(lines) == 7
    assert json.loads(json.dumps(report.to_dict()))["failed"] is True


def test_severities_follow_the_policy(train: pl.DataFrame) -> None:
    schema = infer_schema(train, target="label")
    batch = (
        train.head(20)
        .with_columns(
            (pl.col("âge") * 10).alias("âge"),
            pl.lit("Oslo").alias("ville"),
            pl.lit(None, dtype=pl.Float64).alias("revenu €"),
            pl.lit("later").alias("signup"),
            pl.lit("?").alias("new"),
        )
        .drop("vip")
    )
    flipped = {"warn": "fail", "fail": "warn"}
    default = AnomalyPolicy()
    policy = AnomalyPolicy(
        **{k: flipped[v] for k, v in default.model_dump().items() if v in flipped}
    )
    for pol in (default, policy):
        report = validate_batch(batch, schema, pol)
        assert len(report.anomalies) == 6
        assert all(a.severity == getattr(pol, a.kind) for a in report.anomalies)
    only_warn = AnomalyPolicy(missing_column="warn", type_change="warn")
    assert not validate_batch(batch, schema, only_warn).failed


def test_number_column_turning_into_text_is_a_type_change(train: pl.DataFrame) -> None:
    schema = infer_schema(train)
    batch = train.with_columns(pl.col("revenu €").cast(pl.String).str.replace(r"^(\d)", "€$1"))
    kinds = _kinds(validate_batch(batch, schema))
    assert kinds == {("type_change", "revenu €"): "fail"}
    batch = train.with_columns(pl.col("revenu €").cast(pl.String))  # numbers as strings are fine
    assert validate_batch(batch, schema).anomalies == []


def test_stray_strings_no_more_often_than_in_training_pass() -> None:
    values = [str(float(i)) for i in range(100)]
    values[0] = "?"
    schema = infer_schema(pl.DataFrame({"v": values}))
    assert schema.column("v").coercible_failures == 1
    same = pl.DataFrame({"v": ["?", *[str(float(i)) for i in range(1, 100)]]})
    assert validate_batch(same, schema).anomalies == []
    worse = pl.DataFrame({"v": ["?", "x", *[str(float(i)) for i in range(2, 100)]]})
    assert [a.kind for a in validate_batch(worse, schema).anomalies] == ["type_change"]


def test_out_of_range_counts_values_outside_the_bounds() -> None:
    schema = infer_schema(pl.DataFrame({"x": [0.0, 5.0, 10.0]}))
    report = validate_batch(
        pl.DataFrame({"x": [-1.0, 0.0, 10.0, 10.5, 99.0, None, float("nan")]}), schema
    )
    assert [a.detail for a in report.anomalies if a.kind == "out_of_range"] == [
        "3 values outside [0, 10] (seen -1 .. 99)"
    ]


def test_missing_jump_threshold() -> None:
    schema = infer_schema(pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0] * 5}))
    at = pl.DataFrame({"x": [None, None, *([1.0] * 18)]})  # +10%: not more than the threshold
    above = pl.DataFrame({"x": [None, None, None, *([1.0] * 17)]})
    assert validate_batch(at, schema).anomalies == []
    assert [a.kind for a in validate_batch(above, schema).anomalies] == ["missing_jump"]
    loose = AnomalyPolicy(missing_jump_threshold=0.5)
    assert validate_batch(above, schema, loose).anomalies == []


def test_unseen_categories_compare_whole_floats_as_integers() -> None:
    schema = infer_schema(pl.DataFrame({"y": [0, 1, 2, 1, 0]}), target="y")
    ok = validate_batch(pl.DataFrame({"y": [0.0, 2.0, 2.0]}), schema)
    assert ok.anomalies == []
    bad = validate_batch(pl.DataFrame({"y": [0.0, 3.0, 7.0, 3.0]}), schema)
    assert [a.detail for a in bad.anomalies] == ["3 values not seen in training (e.g. '3', '7')"]


def test_prediction_batches_may_omit_the_target(train: pl.DataFrame) -> None:
    schema = infer_schema(train, target="label")
    batch = train.drop("label")
    assert validate_batch(batch, schema, require_target=False).anomalies == []
    assert _kinds(validate_batch(batch, schema)) == {("missing_column", "label"): "fail"}


def test_empty_batch() -> None:
    schema = infer_schema(pl.DataFrame({"x": [1.0, 2.0]}))
    report = validate_batch(pl.DataFrame({"x": pl.Series([], dtype=pl.Float64)}), schema)
    assert report.anomalies == [] and report.n_rows == 0
