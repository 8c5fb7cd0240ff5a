"""The contract every registered encoder keeps, then each encoder's own behaviour."""

from __future__ import annotations

import json
import warnings
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from dataflywheel.errors import ConfigError, DataError, NotFittedError
from dataflywheel.features.encoders import (
    ENCODERS,
    BinaryEncoder,
    CategoryEncoder,
    DatetimeEncoder,
    Encoder,
    NumberEncoder,
    register_encoder,
)


def messy_series(feature_type: str, n: int = 60, seed: int = 0) -> pl.Series:
    """A column of the given type with missing cells, repeats and (for numbers) NaN."""
    rng = np.random.default_rng(seed)
    values: list[object]
    if feature_type == "number":
        numbers = rng.normal(5, 3, n)
        numbers[rng.random(n) < 0.05] = np.nan
        name, values = "größe", numbers.tolist()
    elif feature_type == "category":
        name, values = "farbe", rng.choice(["rot", "grün", "blau", "紫"], n).tolist()
    elif feature_type == "binary":
        name, values = "aktiv", (rng.random(n) < 0.5).tolist()
    elif feature_type == "datetime":
        hours = rng.integers(0, 9000, n).tolist()
        name, values = "年齢", [datetime(2024, 1, 1) + timedelta(hours=h) for h in hours]
    else:
        raise AssertionError(f"no test data for {feature_type}")
    gaps = rng.random(n) < 0.15
    return pl.Series(name, [None if g else v for g, v in zip(gaps, values, strict=True)])


@pytest.fixture(params=sorted(ENCODERS))
def encoder_cls(request: pytest.FixtureRequest) -> type[Encoder]:
    return ENCODERS[request.param]


def test_contract_fit_returns_self_and_unfitted_raises(encoder_cls: type[Encoder]) -> None:
    series = messy_series(encoder_cls.feature_type)
    enc = encoder_cls()
    with pytest.raises(NotFittedError, match=encoder_cls.__name__):
        enc.transform(series)
    with pytest.raises(NotFittedError):
        enc.to_dict()
    assert enc.fit(series) is enc
    assert [a for a in vars(enc) if a.endswith("_")], "learned state ends in _"


def test_contract_transform_is_pure(encoder_cls: type[Encoder]) -> None:
    series = messy_series(encoder_cls.feature_type)
    copy = series.clone()
    enc = encoder_cls().fit(series)
    state = json.dumps(enc.to_dict())
    first = enc.transform(series)
    second = enc.transform(series)
    assert series.equals(copy)
    assert np.array_equal(first, second)
    assert json.dumps(enc.to_dict()) == state
    assert len(first) == len(series) and np.isfinite(first).all()


def test_contract_round_trip_through_json(encoder_cls: type[Encoder]) -> None:
    train = messy_series(encoder_cls.feature_type, seed=1)
    other = messy_series(encoder_cls.feature_type, seed=2)
    enc = encoder_cls().fit(train)
    loaded = Encoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert type(loaded) is encoder_cls
    assert np.array_equal(loaded.transform(other), enc.transform(other))
    assert loaded.count_unknown(other) == enc.count_unknown(other)


def test_register_rejects_duplicates() -> None:
    with pytest.raises(ConfigError, match="already registered"):
        register_encoder("number", NumberEncoder)


def test_number_encoder_methods() -> None:
    train = pl.Series("x", [1.0, 3.0, None, float("nan"), 8.0])
    z = NumberEncoder().fit(train)
    present = np.array([1.0, 3.0, 8.0])
    assert z.mean_ == pytest.approx(present.mean()) and z.std_ == pytest.approx(present.std())
    expected = (np.array([1.0, 3.0, 3.0, 3.0, 8.0]) - present.mean()) / present.std()
    assert np.allclose(z.transform(train), expected) and z.transform(train).dtype == np.float32
    mm = NumberEncoder("minmax").fit(train)
    assert np.allclose(mm.transform(pl.Series("x", [1.0, 8.0, 15.0])), [0.0, 1.0, 2.0])
    assert np.array_equal(NumberEncoder("none").fit(train).transform(train), [1, 3, 3, 3, 8])
    constant = NumberEncoder().fit(pl.Series("x", [2.0, 2.0]))
    assert np.array_equal(constant.transform(pl.Series("x", [2.0, 4.0])), [0.0, 2.0])


def test_category_encoder_indices_unknown_and_onehot() -> None:
    train = pl.Series("c", ["b", "a", None, "b", "ß"])
    enc = CategoryEncoder().fit(train)
    assert enc.categories_ == ["a", "b", "ß"] and enc.cardinality_ == 4
    new = pl.Series("c", ["ß", "zz", None, "a"])
    assert enc.transform(new).tolist() == [3, 0, 0, 1]
    assert enc.count_unknown(new) == 1
    hot = CategoryEncoder(onehot=True).fit(train).transform(new)
    assert hot.shape == (4, 4) and hot.dtype == np.float32
    assert hot.argmax(axis=1).tolist() == [3, 0, 0, 1] and (hot.sum(axis=1) == 1).all()
    ints = CategoryEncoder().fit(pl.Series("k", [1, 2, 2]))
    assert ints.transform(pl.Series("k", [2.0, 1.0])).tolist() == [2, 1]  # 2.0 reads "2"


def test_binary_encoder() -> None:
    enc = BinaryEncoder().fit(pl.Series("b", ["yes", "no", None, "yes"]))
    assert enc.categories_ == ["no", "yes"]
    new = pl.Series("b", ["yes", "no", None, "maybe"])
    assert enc.transform(new).tolist() == [1.0, 0.0, 0.5, 0.5]
    assert enc.count_unknown(new) == 1
    with pytest.raises(DataError, match="3 distinct values"):
        BinaryEncoder().fit(pl.Series("b", ["x", "y", "z"]))


def test_datetime_encoder_zscores_epoch_seconds() -> None:
    train = pl.Series("t", ["2024-01-01", "2024-01-03", None])
    enc = DatetimeEncoder().fit(train)
    day = 86400.0
    assert enc.std_ == pytest.approx(day)
    out = enc.transform(pl.Series("t", [datetime(2024, 1, 1), datetime(2024, 1, 5), None]))
    assert np.allclose(out, [-1.0, 3.0, 0.0])


@pytest.mark.parametrize("n", [1, 5, 200])
@pytest.mark.parametrize(
    "enc", [CategoryEncoder(), CategoryEncoder(onehot=True), BinaryEncoder()], ids=repr
)
def test_encode_agrees_with_transform_and_count_unknown(enc, n: int) -> None:
    rng = np.random.default_rng(n)
    enc.fit(pl.Series("c", ["a", "b"] * 5))
    s = pl.Series("c", rng.choice(["a", "b", "z", None], n).tolist())
    out, unknown = enc.encode(s)
    assert np.array_equal(out, enc.transform(s)) and out.dtype == enc.transform(s).dtype
    assert unknown == enc.count_unknown(s) == sum(v == "z" for v in s.to_list())
    enc.fit(pl.Series("c", ["b", "z"]))  # refitting must not keep the old lookup
    assert np.array_equal(enc.encode(s)[0], enc.transform(s))


def test_datetime_learns_format_and_reads_each_cell_alone() -> None:
    enc = DatetimeEncoder().fit(pl.Series("t", ["2024-01-01", "2024-01-03", None, "soon"]))
    assert enc.format_ == "%Y-%m-%d"
    assert Encoder.from_dict(json.loads(json.dumps(enc.to_dict()))).format_ == "%Y-%m-%d"
    batch = pl.Series("t", ["yesterday", "2024-01-05", "2024-01-05 10:00:00", " ", None])
    out = enc.transform(batch)
    assert np.allclose(out, [0.0, 3.0, 0.0, 0.0, 0.0])  # unreadable and blank read as missing
    assert enc.count_coerced(batch) == 2  # "yesterday" and the time the format lacks
    for i in range(batch.len()):  # alone, each record encodes as it did in the batch
        assert enc.transform(batch.slice(i, 1))[0] == out[i]
    alone = pl.Series("t", ["yesterday"])
    assert enc.transform(alone).tolist() == [0.0] and enc.count_coerced(alone) == 1


def test_datetime_without_a_learned_format_reads_common_formats_per_cell() -> None:
    enc = DatetimeEncoder().fit(pl.Series("t", [datetime(2024, 1, 1), datetime(2024, 1, 3)]))
    assert enc.format_ is None
    cells = ["2024-01-05", "05/01/2024", "2024-01-05T00:00:00Z", "2024-01-05 00:00", "never"]
    out, coerced = enc.encode_coerced(pl.Series("t", cells))
    assert np.allclose(out, [3.0, 3.0, 3.0, 3.0, 0.0]) and coerced == 1
    assert [enc.transform(pl.Series("t", [c]))[0] for c in cells] == out.tolist()


def test_datetime_state_saved_before_format_existed_still_loads() -> None:
    data = DatetimeEncoder().fit(pl.Series("t", ["2024-01-01", "2024-01-03"])).to_dict()
    del data["state"]["format_"]
    old = Encoder.from_dict(data)
    assert old.format_ is None
    assert np.allclose(old.transform(pl.Series("t", ["2024-01-05", "junk"])), [3.0, 0.0])


@pytest.mark.parametrize("method", ["zscore", "minmax", "none"])
def test_number_extremes_are_clipped_and_infinity_is_missing(method: str) -> None:
    enc = NumberEncoder(method).fit(pl.Series("x", [1.0, 2.0, 4.0, float("inf")]))
    assert np.isfinite([enc.fill_, *enc.affine()]).all()  # fit ignores the infinity
    fill = enc.transform(pl.Series("x", [None]))[0]
    s = pl.Series("x", [1e308, -1e308, float("inf"), float("-inf"), float("nan")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = enc.transform(s)
    assert np.isfinite(out).all() and out.dtype == np.float32
    assert out[0] == enc.limit() and out[1] == -enc.limit()
    assert out[2] == out[3] == out[4] == fill
    assert enc.count_coerced(s) == 2  # the infinities; NaN is plain missing


def test_number_counts_unreadable_cells() -> None:
    enc = NumberEncoder().fit(pl.Series("x", [1.0, 3.0]))
    s = pl.Series("x", ["abc", "2", None, " ", "1e999"])
    assert enc.count_coerced(s) == 2  # "abc", and "1e999" reads as infinity
    assert np.allclose(enc.transform(s), [0.0, 0.0, 0.0, 0.0, 0.0])
    assert enc.count_coerced(pl.Series("x", [1.0, None, float("nan")])) == 0
