"""Train/valid/test split by row index, and the leakage check."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from dataflywheel.config import SplitConfig
from dataflywheel.data.schema import category_strings
from dataflywheel.data.split import gather_splits, label_codes, leakage_report, split_indices
from dataflywheel.errors import DataError


def split_frame(df: pl.DataFrame, target: str, cfg: SplitConfig, stratify_labels: bool) -> dict[str, pl.DataFrame]:
    """``df`` split as the processing stage splits it: stratified on ``target`` (as strings,
    missing its own class) when asked and every class has enough rows."""
    labels = label_codes(category_strings(df[target])) if stratify_labels else None
    indices, _ = split_indices(df.height, labels, cfg)
    return gather_splits(df.get_columns(), indices)


def labelled(n: int, minority: float, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "id": np.arange(n),
            "größe": rng.normal(size=n),
            "ziel": np.where(np.arange(n) % int(1 / minority) == 0, "ja", "nein"),
        }
    )


def test_split_partitions_rows_deterministically() -> None:
    df = labelled(1000, 0.1)
    cfg = SplitConfig(train=0.6, valid=0.2, test=0.2, seed=7)
    a = split_frame(df, "ziel", cfg, stratify_labels=True)
    b = split_frame(df, "ziel", cfg, stratify_labels=True)
    ids = {k: v["id"].to_list() for k, v in a.items()}
    assert ids == {k: v["id"].to_list() for k, v in b.items()}
    assert sorted(ids["train"] + ids["valid"] + ids["test"]) == list(range(1000))
    assert (len(ids["train"]), len(ids["valid"]), len(ids["test"])) == (600, 200, 200)
    assert all(v == sorted(v) for v in ids.values())  # each split keeps the original order
    other = split_frame(df, "ziel", SplitConfig(train=0.6, valid=0.2, test=0.2, seed=8), True)
    assert other["test"]["id"].to_list() != ids["test"]


def test_stratified_split_keeps_class_shares() -> None:
    df = labelled(1000, 0.05)  # 50 rows of "ja"
    cfg = SplitConfig(train=0.6, valid=0.2, test=0.2, seed=3)
    parts = split_frame(df, "ziel", cfg, stratify_labels=True)
    counts = {k: int((v["ziel"] == "ja").sum()) for k, v in parts.items()}
    assert counts == {"train": 30, "valid": 10, "test": 10}
    idx, stratified = split_indices(df.height, df["ziel"].to_numpy(), cfg)
    assert stratified and len(idx["test"]) == 200


def test_rare_class_falls_back_to_random_split() -> None:
    df = labelled(100, 0.5).with_columns(
        pl.when(pl.col("id") == 0).then(pl.lit("selten")).otherwise(pl.col("ziel")).alias("ziel")
    )
    labels = df["ziel"].to_numpy()
    idx, stratified = split_indices(df.height, labels, SplitConfig())
    assert not stratified
    assert sum(len(v) for v in idx.values()) == 100


def test_no_valid_split_gives_empty_frame_with_columns() -> None:
    df = labelled(50, 0.5)
    parts = split_frame(df, "ziel", SplitConfig(train=0.8, valid=0.0, test=0.2), True)
    assert parts["valid"].is_empty() and parts["valid"].columns == df.columns
    assert parts["train"].height == 40 and parts["test"].height == 10


def test_too_few_rows_is_a_data_error() -> None:
    with pytest.raises(DataError, match="too few"):
        split_frame(labelled(2, 0.5), "ziel", SplitConfig(), stratify_labels=False)


def test_leakage_counts_rows_of_later_split_seen_in_earlier() -> None:
    train = pl.DataFrame({"a": [1, 2, 3, None], "b": ["x", "y", "z", "w"], "y": [0, 1, 0, 1]})
    valid = pl.DataFrame({"a": [1, 9, None], "b": ["x", "x", "w"], "y": [1, 1, 1]})
    test = pl.DataFrame({"a": [2, 2, 9, 5], "b": ["y", "y", "x", "v"], "y": [0, 0, 0, 0]})
    splits = {"train": train, "valid": valid, "test": test}
    report = leakage_report(splits, ["a", "b"])
    assert report == {"train/valid": 2, "train/test": 2, "valid/test": 1}
    assert leakage_report(splits, ["a", "b", "y"])["train/valid"] == 1
    empty = {"train": train, "valid": valid.clear(), "test": test}
    assert leakage_report(empty, ["a", "b"])["valid/test"] == 0


def test_label_codes_stratify_exactly_like_the_strings() -> None:
    rng = np.random.default_rng(3)
    strings = rng.choice(["b", "B", "a", "ä", "東", "10", "2"], 500).tolist()
    codes = label_codes(pl.Series(strings))
    assert len(np.unique(codes)) == 7
    cfg = SplitConfig(train=0.6, valid=0.2, test=0.2, seed=5)
    by_string, s1 = split_indices(500, np.array(strings, dtype=object), cfg)
    by_code, s2 = split_indices(500, codes, cfg)
    assert s1 and s2
    assert all(np.array_equal(by_string[k], by_code[k]) for k in by_string)


def test_gather_splits_equals_indexing_and_consumes_columns() -> None:
    df = labelled(300, 0.2).with_columns(pl.Series("leer", [None] * 300, dtype=pl.String))
    indices, _ = split_indices(300, None, SplitConfig(seed=1))
    columns = df.get_columns()
    splits = gather_splits(columns, indices)
    assert columns == []
    for name, idx in indices.items():
        assert splits[name].equals(df[idx]) and splits[name].schema == df.schema


def test_stratified_split_apportions_every_class_and_keeps_exact_sizes() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array(["a", "b", "c", "d"]), size=997, p=[0.5, 0.3, 0.15, 0.05])
    cfg = SplitConfig(train=0.7, valid=0.15, test=0.15, seed=11)
    idx, stratified = split_indices(len(labels), labels, cfg)
    assert stratified
    assert [len(idx[k]) for k in ("train", "valid", "test")] == [697, 150, 150]  # as train_test_split sizes them
    assert np.array_equal(np.sort(np.concatenate(list(idx.values()))), np.arange(997))
    for cls in "abcd":
        n = int((labels == cls).sum())
        for name, share in (("test", 150 / 997), ("valid", 150 / 997)):
            assert abs(int((labels[idx[name]] == cls).sum()) - share * n) < 1.5  # within rounding
    again, _ = split_indices(len(labels), labels, cfg)
    assert all(np.array_equal(idx[k], again[k]) for k in idx)
