"""Built-in example tables, from scikit-learn's bundled datasets (no download needed).

Each example is a polars frame of the dataset's features, named as scikit-learn names them,
plus a ``target`` column: ``breast_cancer`` (binary 0/1), ``iris`` and ``wine`` (multiclass
0..k-1) and ``diabetes`` (regression).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Literal

import polars as pl

from dataflywheel.data.source import Source
from dataflywheel.errors import DataError

ExampleTask = Literal["binary", "multiclass", "regression"]

TARGET = "target"


def _loader(name: str) -> Callable[..., Any]:
    from sklearn import datasets

    loader: Callable[..., Any] = getattr(datasets, f"load_{name}")
    return loader


# name -> the task its target poses
EXAMPLES: dict[str, ExampleTask] = {
    "breast_cancer": "binary",
    "iris": "multiclass",
    "wine": "multiclass",
    "diabetes": "regression",
}


def available_examples() -> list[str]:
    """Names accepted by :func:`load_example` (and ``sklearn:NAME`` sources)."""
    return sorted(EXAMPLES)


def check_example(name: str) -> str:
    """Return ``name`` if it is a known example; raise :class:`DataError` listing them if not."""
    if name not in EXAMPLES:
        raise DataError(
            f"unknown example '{name}'",
            where="data.source.name",
            fix=f"use one of {', '.join(available_examples())}",
        )
    return name


def load_example(name: str) -> pl.DataFrame:
    """The example as a frame: features then ``target`` (Int64, or Float64 for regression)."""
    bunch = _loader(check_example(name))()
    features = pl.DataFrame(bunch.data, schema=[str(c) for c in bunch.feature_names], orient="row")
    target = pl.Series(TARGET, bunch.target)
    from dataflywheel.tasks import get_task

    if get_task(EXAMPLES[name]).has_classes:
        target = target.cast(pl.Int64)
    return features.with_columns(target)


def sklearn_version() -> str:
    import sklearn

    return str(sklearn.__version__)


class SklearnSource(Source):
    """A built-in example table (see :mod:`dataflywheel.data.examples`)."""

    kind = "sklearn"

    def __init__(self, name: str) -> None:
        self.name = check_example(name)

    def describe(self) -> str:
        return f"sklearn:{self.name}"

    def read(self) -> pl.DataFrame:
        return load_example(self.name)

    def fingerprint(self) -> str:
        return hashlib.sha256(f"sklearn:{self.name}:{sklearn_version()}".encode()).hexdigest()
