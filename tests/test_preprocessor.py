"""The Preprocessor: from a schema, fit on train, encode, save and load back identically."""

from __future__ import annotations

import json
import timeit
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dataflywheel.config import FeatureConfig
from dataflywheel.data.schema import infer_schema
from dataflywheel.errors import ConfigError, ModelError, NotFittedError, SchemaError
from dataflywheel.features.preprocessor import Preprocessor


def table(n: int = 200, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "größe": [
                None if i % 17 == 0 else float(v) for i, v in enumerate(rng.normal(170, 9, n))
            ],
            "年齢": rng.integers(18, 90, n).astype(float),
            "farbe": rng.choice(["rot", "grün", "blau"], n).tolist(),
            "stadt": rng.choice(["Köln", "東京", "Lyon", "Oslo"], n).tolist(),
            "aktiv": (rng.random(n) < 0.3).tolist(),
            "notiz": [f"frei formulierter text nummer {i} " * 3 for i in range(n)],
            "kunden_id": [f"K{i:05d}" for i in range(n)],
            "ziel": rng.choice(["ja", "nein"], n).tolist(),
        }
    )


@pytest.fixture
def fitted() -> Preprocessor:
    df = table()
    schema = infer_schema(df, target="ziel")
    overrides = [
        FeatureConfig(name="stadt", encoder="onehot"),
        FeatureConfig(name="年齢", encoder="minmax"),
    ]
    return Preprocessor.from_schema(schema, overrides, exclude=["kunden_id"]).fit(df)


def test_from_schema_skips_text_target_and_excluded(fitted: Preprocessor) -> None:
    assert [f[0] for f in fitted.features] == ["größe", "年齢", "farbe", "stadt", "aktiv"]
    assert fitted.skipped == ["notiz"]
    assert dict((c, e) for c, _, e in fitted.features)["stadt"] == "onehot"


def test_transform_shapes_and_names(fitted: Preprocessor) -> None:
    batch = fitted.transform(table(50, seed=1))
    # größe, 年齢, stadt one-hot (4 cities + unknown), aktiv
    assert fitted.n_numeric_ == 8 and batch.numeric.shape == (50, 8)
    assert batch.numeric.dtype == np.float32 and batch.categorical.dtype == np.int64
    assert fitted.cardinalities_ == [4] and batch.categorical.shape == (50, 1)
    assert fitted.feature_names_out_[:3] == ["größe", "年齢", "stadt=<unknown>"]
    assert fitted.feature_names_out_[-1] == "farbe" and len(fitted.feature_names_out_) == 9
    assert np.isfinite(batch.numeric).all()
    assert batch.categorical.min() >= 1 and batch.unknown == {}


def test_unknown_categories_are_counted(fitted: Preprocessor) -> None:
    df = table(10, seed=2).with_columns(
        pl.Series("farbe", ["lila"] * 3 + ["rot"] * 7), pl.Series("stadt", ["Rom"] * 10)
    )
    batch = fitted.transform(df)
    assert batch.unknown == {"farbe": 3, "stadt": 10}
    assert batch.categorical[:3, 0].tolist() == [0, 0, 0]


def test_missing_column_is_a_schema_error(fitted: Preprocessor) -> None:
    with pytest.raises(SchemaError) as err:
        fitted.transform(table(5).drop("stadt"))
    assert err.value.where == "column 'stadt'" and err.value.fix


def test_unfitted_and_bad_overrides() -> None:
    schema = infer_schema(table(), target="ziel")
    pre = Preprocessor.from_schema(schema)
    with pytest.raises(NotFittedError, match="Preprocessor"):
        pre.transform(table(5))
    with pytest.raises(ConfigError, match="nope"):
        Preprocessor.from_schema(schema, [FeatureConfig(name="nope")])
    with pytest.raises(ConfigError, match="onehot"):
        Preprocessor.from_schema(schema, [FeatureConfig(name="größe", encoder="onehot")])


def test_save_load_gives_identical_outputs(fitted: Preprocessor, tmp_path: Path) -> None:
    path = fitted.save(tmp_path / "preprocessor.json")
    assert [p.name for p in tmp_path.iterdir()] == ["preprocessor.json"]
    loaded = Preprocessor.load(path)
    df = table(80, seed=3)
    a, b = fitted.transform(df), loaded.transform(df)
    assert np.array_equal(a.numeric, b.numeric) and np.array_equal(a.categorical, b.categorical)
    assert loaded.feature_names_out_ == fitted.feature_names_out_ and loaded.skipped == ["notiz"]
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["encoders"]["farbe"]["encoder"] = "missing-encoder"
    path.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ModelError) as err:
        Preprocessor.load(path)
    assert err.value.where == str(path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match="not a valid preprocessor"):
        Preprocessor.load(path)


def reference(pre: Preprocessor, df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, dict]:
    """Encode column by column with each encoder's own transform (the contract transform keeps)."""
    numeric, categorical, unknown = [], [], {}
    for col, enc in pre.encoders_.items():
        out = enc.transform(df[col])
        width = 1 if enc.kind == "categorical" else enc.width_
        (categorical if enc.kind == "categorical" else numeric).append(out.reshape(df.height, width))
        if enc.count_unknown(df[col]):
            unknown[col] = enc.count_unknown(df[col])
    return np.hstack(numeric), np.hstack(categorical), unknown


def messy(n: int, seed: int) -> pl.DataFrame:
    """Rows like table()'s with missing cells, NaN, unseen categories and missing flags."""
    rng = np.random.default_rng(seed)
    df = table(n, seed)
    return df.with_columns(
        pl.when(pl.Series(rng.random(n) < 0.2)).then(None).otherwise(pl.col("年齢")).alias("年齢"),
        pl.when(pl.Series(rng.random(n) < 0.1)).then(float("nan")).otherwise(pl.col("größe")).alias("größe"),
        pl.Series("farbe", rng.choice(["rot", "grün", "lila", None], n).tolist()),
        pl.Series("stadt", rng.choice(["Köln", "Rom", None], n).tolist()),
        pl.Series("aktiv", [None if v < 0.1 else bool(v < 0.5) for v in rng.random(n)]),
    )


@pytest.mark.parametrize("n", [0, 1, 7, 300])
def test_transform_matches_per_column_encoding(
    fitted: Preprocessor, n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dataflywheel.features.preprocessor.CHUNK_ROWS", 64)  # several chunks
    df = messy(n, seed=n)
    numeric, categorical, unknown = reference(fitted, df)
    batch = fitted.transform(df)
    assert np.array_equal(batch.numeric, numeric) and np.array_equal(batch.categorical, categorical)
    assert batch.unknown == unknown
    if n == 300:
        assert set(unknown) == {"farbe", "stadt"}


def test_transform_reads_number_columns_of_other_dtypes(fitted: Preprocessor) -> None:
    df = table(20, seed=4)
    as_text = df.with_columns(pl.col("größe").cast(pl.String), pl.col("年齢").cast(pl.Int64))
    a, b = fitted.transform(df), fitted.transform(as_text)
    assert np.array_equal(a.numeric, b.numeric)


@pytest.mark.parametrize("seed", range(4))
def test_transform_records_equals_transform(fitted: Preprocessor, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    records = messy(n, seed).to_dicts()
    for r in records:  # keys left out of some records read as missing
        if rng.random() < 0.2:
            del r[str(rng.choice(["größe", "farbe", "aktiv"]))]
    if seed == 1:  # values polars must read: a number as text, a category as a number
        records[0]["größe"], records[-1]["farbe"] = "171.5", 7
    if seed == 2:
        records[0]["年齢"] = 40  # an int among floats
    expected = fitted.transform(pl.DataFrame(records, infer_schema_length=None))
    got = fitted.transform_records(records)
    assert np.array_equal(got.numeric, expected.numeric, equal_nan=True)
    assert np.array_equal(got.categorical, expected.categorical)
    assert got.unknown == expected.unknown


@pytest.mark.parametrize("n", [1, 3, 40])
def test_validated_number_records_read_as_transform_reads_them(n: int) -> None:
    """The server's records (every column present, numbers finite floats or None) skip the
    per-value checks when every feature is a number: the same encoding, missing values filled."""
    rng = np.random.default_rng(n)
    df = pl.DataFrame({"a": rng.normal(5, 2, 200), "b": rng.exponential(3, 200), "c": rng.integers(0, 9, 200) * 1.0})
    pre = Preprocessor([(c, "number", "auto") for c in "abc"]).fit(df)
    records = [{k: (None if rng.random() < 0.2 else float(v)) for k, v in r.items()} for r in df.head(n).to_dicts()]
    fast = pre.transform_records(records, validated=True)
    slow = pre.transform_records(records)
    expected = pre.transform(pl.DataFrame(records, schema={c: pl.Float64 for c in "abc"}))
    assert np.array_equal(fast.numeric, expected.numeric) and np.array_equal(slow.numeric, expected.numeric)
    assert fast.categorical.shape == expected.categorical.shape == (n, 0)
    assert np.isfinite(fast.numeric).all()


def test_transform_records_long_list_and_missing_column(fitted: Preprocessor) -> None:
    records = messy(400, seed=9).to_dicts()
    expected = fitted.transform(pl.DataFrame(records))
    got = fitted.transform_records(records)
    assert np.array_equal(got.numeric, expected.numeric) and got.unknown == expected.unknown
    with pytest.raises(SchemaError) as err:
        fitted.transform_records([{k: v for k, v in r.items() if k != "stadt"} for r in records[:3]])
    assert err.value.where == "column 'stadt'"


@pytest.fixture
def dated() -> Preprocessor:
    df = pl.DataFrame(
        {
            "alter": [20.0, 30.0, 40.0, None],
            "seit": ["2024-01-01", "2024-01-03", None, "2024-01-02"],
            "farbe": ["rot", "grün", "rot", None],
        }
    )
    features = [("alter", "number", "auto"), ("seit", "datetime", "auto"), ("farbe", "category", "auto")]
    return Preprocessor(features).fit(df)


def test_unreadable_cells_are_counted_and_scored_as_missing(dated: Preprocessor) -> None:
    records = [
        {"alter": "abc", "seit": "yesterday", "farbe": "rot"},
        {"alter": "35", "seit": "2024-01-02", "farbe": "rot"},
        {"alter": None, "seit": None, "farbe": "rot"},
        {"alter": " ", "seit": "2024-01-05", "farbe": "lila"},
    ]
    df = pl.DataFrame(records)
    batch = dated.transform(df)
    assert batch.coerced == {"alter": 1, "seit": 1} and batch.unknown == {"farbe": 1}
    assert np.array_equal(batch.numeric[0], batch.numeric[2])  # unreadable reads as missing
    for col in ("alter", "seit"):
        assert dated.encoders_[col].count_coerced(df[col]) == batch.coerced[col]
    got = dated.transform_records(records)
    assert np.array_equal(got.numeric, batch.numeric) and got.coerced == batch.coerced
    assert dated.transform(df.slice(1, 3)).coerced == {}


def test_a_record_encodes_the_same_alone_and_in_any_batch(dated: Preprocessor) -> None:
    records = [
        {"alter": 31.0, "seit": "yesterday", "farbe": "rot"},
        {"alter": 25.0, "seit": "2024-01-04", "farbe": "grün"},
        {"alter": 1e308, "seit": "2024-01-02 12:00:00", "farbe": None},
    ]
    together = dated.transform_records(records)
    frame = dated.transform(pl.DataFrame(records))
    assert np.array_equal(together.numeric, frame.numeric)
    for i, r in enumerate(records):
        alone = dated.transform_records([r])
        assert np.array_equal(alone.numeric[0], together.numeric[i])
        assert np.array_equal(dated.transform(pl.DataFrame([r])).numeric[0], together.numeric[i])


def test_extreme_numbers_give_finite_outputs_without_warnings(dated: Preprocessor) -> None:
    records = [{"alter": v, "seit": None, "farbe": "rot"} for v in (1e308, -1e308, float("inf"), float("nan"))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = dated.transform_records(records)
        frame = dated.transform(pl.DataFrame(records))
    x = batch.numeric[:, 0]
    assert np.isfinite(batch.numeric).all() and np.array_equal(frame.numeric, batch.numeric)
    limit = dated.encoders_["alter"].limit()
    assert x[0] == limit and x[1] == -limit and x[2] == x[3]  # infinity reads as missing, like NaN
    assert batch.coerced == frame.coerced == {"alter": 1}


def test_one_record_of_thirty_numbers_is_fast() -> None:
    rng = np.random.default_rng(0)
    cols = [f"x{i}" for i in range(30)]
    pre = Preprocessor([(c, "number", "auto") for c in cols]).fit(
        pl.DataFrame({c: rng.normal(size=50) for c in cols})
    )
    record = [{c: float(v) for c, v in zip(cols, rng.normal(size=30), strict=True)}]
    pre.transform_records(record)
    best = min(timeit.repeat(lambda: pre.transform_records(record), number=20, repeat=5)) / 20
    assert best < 1e-3
