"""Target encoding for the three tasks, its inverse, and the errors a wrong task gives."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from dataflywheel.errors import DataError, NotFittedError
from dataflywheel.features.target import TargetEncoder


def test_binary_positive_class_is_second_sorted() -> None:
    y = pl.Series("kündigt", ["nein", "ja", "ja", "nein", "nein"])
    enc = TargetEncoder("binary").fit(y)
    assert enc.classes_ == ["ja", "nein"]
    out = enc.transform(y)
    assert out.dtype == np.float32 and out.tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert enc.inverse_transform(np.array([0.9, 0.1])).tolist() == ["nein", "ja"]


def test_multiclass_indices_and_inverse() -> None:
    y = pl.Series("art", [2, 0, 1, 2, 1])
    enc = TargetEncoder("multiclass").fit(y)
    assert enc.classes_ == ["0", "1", "2"]
    idx = enc.transform(y)
    assert idx.dtype == np.int64 and idx.tolist() == [2, 0, 1, 2, 1]
    scores = np.eye(3)[[1, 2]]
    assert enc.inverse_transform(scores).tolist() == ["1", "2"]
    assert enc.inverse_transform(idx).tolist() == ["2", "0", "1", "2", "1"]


def test_regression_standardises_and_inverts() -> None:
    y = pl.Series("preis", [10.0, 20.0, 30.0, None])
    enc = TargetEncoder("regression").fit(y)
    out = enc.transform(y.drop_nulls())
    assert out.dtype == np.float32
    assert np.allclose(out, [-1.2247449, 0.0, 1.2247449])
    assert np.allclose(enc.inverse_transform(out), [10.0, 20.0, 30.0])


def test_unknown_label_names_it_and_known_classes() -> None:
    enc = TargetEncoder("multiclass").fit(pl.Series("art", ["a", "b", "c"]))
    with pytest.raises(DataError) as err:
        enc.transform(pl.Series("art", ["a", "zebra"]))
    assert "'zebra'" in err.value.message and "['a', 'b', 'c']" in err.value.message


def test_binary_task_on_continuous_target() -> None:
    y = pl.Series("preis", np.linspace(0, 1, 50))
    with pytest.raises(DataError) as err:
        TargetEncoder("binary").fit(y)
    assert err.value.message == "target has 50 distinct values; a binary task needs exactly 2"
    assert err.value.fix == "set model.task: regression or multiclass"


def test_missing_and_non_numeric_targets_are_data_errors() -> None:
    enc = TargetEncoder("binary").fit(pl.Series("y", [0, 1]))
    with pytest.raises(DataError, match="missing"):
        enc.transform(pl.Series("y", [0, None]))
    with pytest.raises(DataError, match="'teuer'"):
        TargetEncoder("regression").fit(pl.Series("y", ["1.5", "teuer"]))


@pytest.mark.parametrize(
    ("task", "values"),
    [("binary", ["x", "y", "y"]), ("multiclass", ["a", "b", "c"]), ("regression", [1.0, 5.0, 2.0])],
)
def test_round_trip_and_not_fitted(task: str, values: list[object]) -> None:
    y = pl.Series("y", values)
    with pytest.raises(NotFittedError):
        TargetEncoder(task).transform(y)  # type: ignore[arg-type]
    enc = TargetEncoder(task).fit(y)  # type: ignore[arg-type]
    loaded = TargetEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert np.array_equal(loaded.transform(y), enc.transform(y))
