"""The processing stage end to end: raw table + schema + config -> clean splits and a report.

Order: drop excluded columns -> coerce types -> drop rows whose target is missing -> drop
exact duplicates (whole rows, or equal values of the columns the task names: generation's
prompt) -> split -> fill missing cells and clip outliers with statistics from the train split
only -> count rows shared between splits (leakage).

Memory: duplicates and the split are row indices; each split is gathered straight from the
coerced frame, column by column, releasing it as it goes. So when the caller hands over its
only reference to the input (see ``build_version``), about one copy of the table is alive.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from dataflywheel.config import DataConfig
from dataflywheel.data.cleaning import Clipper, Imputer, coerce_types, unique_rows
from dataflywheel.data.schema import category_strings
from dataflywheel.data.split import (
    SPLITS,
    gather_splits,
    label_codes,
    leakage_report,
    split_indices,
)
from dataflywheel.errors import SchemaError

if TYPE_CHECKING:
    from dataflywheel.data.schema import Schema


@dataclass
class Processed:
    """Clean splits (keys ``train``, ``valid``, ``test``) and what processing did to get them.

    ``report`` keys: rows_in, rows_out, excluded, coercion_failures (per column),
    missing_target_dropped, duplicates_removed (and duplicate_columns when the task's duplicates
    are equal values of some columns only), missing_filled (per column, all splits),
    missing_dropped, missing_dropped_by (rows missing each ``drop`` column), cells_clipped,
    stratified, split_sizes, leakage (see :func:`~dataflywheel.data.split.leakage_report`).
    """

    splits: dict[str, pl.DataFrame]
    report: dict[str, Any] = field(default_factory=dict)


def _stratify(schema: Schema, target: str, task: str | None) -> bool:
    if task is None:
        from dataflywheel.data.schema import infer_task

        task = infer_task(schema.column(target))
    from dataflywheel.tasks import get_task

    return get_task(task).has_classes


def process(
    df: pl.DataFrame,
    schema: Schema,
    cfg: DataConfig,
    where: str = "data",
    *,
    task: str | None = None,
    inputs: Collection[str] | None = None,
) -> Processed:
    """Run the processing stage on ``df`` (its ``schema`` inferred or loaded beforehand).

    ``task`` decides whether the split is stratified (classification only); None infers it
    from the target column's schema. ``inputs`` are the columns the model reads: a ``drop``
    missing-value rule removes rows only for them (None: every column). Raises :class:`SchemaError`
    when the target is absent, :class:`DataError` when ``cfg.processing.coerce`` is ``reject``
    and a cell is unreadable.
    """
    target = cfg.target
    if target not in df.columns:
        raise SchemaError(
            f"target column '{target}' is not in the data",
            where="data.target",
            fix=f"set data.target to one of: {', '.join(df.columns[:10])}",
        )
    proc = cfg.processing
    rows_in = df.height
    excluded = [c for c in cfg.exclude if c in df.columns and c != target]
    df = df.drop(excluded)

    df, failures = coerce_types(df, schema, proc.coerce, where)
    missing_target = df[target].null_count()
    if missing_target:
        df = df.drop_nulls(subset=[target])

    from dataflywheel.tasks import get_task

    duplicate_columns = get_task(task).duplicate_columns(cfg) if task is not None else None
    keep = unique_rows(df.select(duplicate_columns) if duplicate_columns else df) if proc.drop_duplicates else None
    rows = None if keep is None else keep.arg_true().to_numpy()
    n_rows = df.height if rows is None else len(rows)
    duplicates = df.height - n_rows

    strat = cfg.split.stratify and _stratify(schema, target, task)
    labels = None
    if strat:
        kept = df[target] if keep is None else df[target].filter(keep)
        labels = label_codes(category_strings(kept))
    indices, stratified = split_indices(n_rows, labels, cfg.split)
    if rows is not None:
        indices = {name: rows[idx] for name, idx in indices.items()}
    features = [c for c in df.columns if c != target]
    columns = df.get_columns()
    del df, keep  # gather_splits frees each input column once it is gathered
    splits = gather_splits(columns, indices)
    known = {c.name: c.type for c in schema.columns}
    imputer = Imputer(schema, proc.missing, target=target, inputs=inputs).fit(splits["train"])
    filled: dict[str, int] = {}
    dropped_by: dict[str, int] = {}
    missing_dropped = 0
    for name in SPLITS:
        nulls = splits[name].select(features).null_count().row(0, named=True)
        for col, n in nulls.items():
            if n and col in imputer.fill_:
                filled[col] = filled.get(col, 0) + int(n)
        for col, n in imputer.drop_counts(splits[name]).items():
            dropped_by[col] = dropped_by.get(col, 0) + n
        splits[name], dropped = imputer.transform_owned([splits.pop(name)])
        missing_dropped += dropped

    clipped = 0
    if proc.clip_quantiles is not None:
        numbers = [c for c in features if known.get(c) == "number"]
        clipper = Clipper(numbers, proc.clip_quantiles).fit(splits["train"])
        for name in SPLITS:
            splits[name], n = clipper.transform(splits[name])
            clipped += n

    report: dict[str, Any] = {
        "rows_in": rows_in,
        "rows_out": sum(s.height for s in splits.values()),
        "excluded": excluded,
        "coercion_failures": failures,
        "missing_target_dropped": missing_target,
        "duplicates_removed": duplicates,
        "missing_filled": filled,
        "missing_dropped": missing_dropped,
        "missing_dropped_by": dropped_by,
        "cells_clipped": clipped,
        "stratified": stratified,
        "split_sizes": {name: s.height for name, s in splits.items()},
        "leakage": leakage_report(splits, features),
    }
    if duplicate_columns:
        report["duplicate_columns"] = duplicate_columns
    return Processed(splits=splits, report=report)
