"""``flywheel feedback import FILE``: offline labels for logged predictions.

The file (CSV, TSV, JSON lines, JSON or Parquet) has a ``label`` column and either

* a ``prediction_id`` column: each label is attached to that logged prediction; or
* the record itself (the feature columns as sent to ``/v1/predict``): each row is matched to
  the most recent logged prediction whose input is identical (numbers compared as floats).

Decision: a row that names an unknown prediction id, or whose record matches no logged
prediction, is an error naming its row, and NOTHING from the file is stored. Feedback must
belong to a prediction (the ``feedback`` table requires it, and lineage and live accuracy rely
on it); labelled rows that were never served are new training data: add them to the source.

Labels are checked like ``/v1/feedback`` checks them (one of the predicting model's classes, or
a number for regression). The whole file is one transaction, and importing it again adds
nothing: each row has an idempotency key, its ``idempotency_key`` column where the file has
one, else a hash of (prediction, label). As with ``/v1/feedback``, a key already stored for
other feedback (another prediction or label) is an error naming the row and the key. Two
imports of one file at once store each row once; the later one reports them already imported.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from dataflywheel.errors import DataError, FlywheelError, NotFoundError, StoreError
from dataflywheel.feedback.log import FeedbackRow, PredictionRow, new_id, same_value
from dataflywheel.store import Project

LABEL = "label"
PREDICTION_ID = "prediction_id"
KEY = "idempotency_key"
_READERS = {".csv": pl.read_csv, ".tsv": lambda p: pl.read_csv(p, separator="\t"), ".jsonl": pl.read_ndjson,
            ".ndjson": pl.read_ndjson, ".json": pl.read_json, ".parquet": pl.read_parquet}


@dataclass
class ImportResult:
    rows: int
    created: int
    already: int
    """Rows whose (prediction, label) was imported before: skipped."""
    matched_by: str
    """``prediction_id`` or ``record``."""


def read_labels(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"cannot read a {path.suffix or 'extension-less'} file", where=str(path),
                        fix=f"use one of {', '.join(_READERS)}")
    if not path.is_file():
        raise DataError("file not found", where=str(path))
    try:
        df = reader(path)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise DataError(f"cannot read it ({str(exc).splitlines()[0]})", where=str(path)) from None
    if LABEL not in df.columns:
        raise DataError("has no 'label' column", where=str(path),
                        fix="give columns prediction_id,label or the feature columns plus label")
    if df.height == 0:
        raise DataError("has no rows", where=str(path))
    return df


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    return str(value)


def record_key(record: dict[str, Any], columns: list[str]) -> str | None:
    """A comparable key of ``record`` over ``columns``; None if it lacks one of them."""
    if set(record) != set(columns):
        return None
    return json.dumps([_canonical(record[c]) for c in columns])


def _match_records(project: Project, df: pl.DataFrame, where: str) -> list[str]:
    columns = sorted(c for c in df.columns if c != LABEL)
    wanted = {record_key(r, columns): i for i, r in enumerate(df.select(columns).iter_rows(named=True))}
    found: dict[str, str] = {}
    with project.metadata.transaction() as s:
        q = select(PredictionRow.id, PredictionRow.input).order_by(PredictionRow.created_at, PredictionRow.id)
        for pid, inp in s.execute(q.execution_options(yield_per=2000)):
            key = record_key(inp or {}, columns)
            if key is not None and key in wanted:
                found[key] = pid  # later rows win: the most recent prediction
    ids = []
    for i, r in enumerate(df.select(columns).iter_rows(named=True)):
        pid = found.get(record_key(r, columns) or "")
        if pid is None:
            raise NotFoundError("no logged prediction has this record's input", where=f"{where} row {i + 1}",
                                fix="import by prediction_id, or add never-served labelled rows to the data source")
        ids.append(pid)
    return ids


def idempotency_key(prediction_id: str, label: Any) -> str:
    digest = hashlib.sha256(f"{prediction_id}\0{json.dumps(label)}".encode()).hexdigest()[:40]
    return f"import:{digest}"


def import_feedback(project: Project, path: str | Path, *, attempts: int = 5) -> ImportResult:
    """Attach the file's labels to their predictions (see the module docstring).

    Another writer may store some of the same keys between this import's reads and its
    commit (two imports of one file at once): the transaction is then run again, up to
    ``attempts`` times, and finds those rows already imported."""
    where = str(path)
    df = read_labels(path)
    by_id = PREDICTION_ID in df.columns
    ids: list[str | None]
    if by_id:
        ids = [None if v is None else str(v) for v in df[PREDICTION_ID].to_list()]
    else:
        ids = list(_match_records(project, df.drop(KEY, strict=False), where))
    keys = [None if v is None else str(v) for v in df[KEY].to_list()] if KEY in df.columns else [None] * df.height
    rows = list(zip(ids, df[LABEL].to_list(), keys, strict=True))
    for attempt in range(1, attempts + 1):
        try:
            created, already = _store(project, where, rows)
        except (IntegrityError, OperationalError) as exc:
            if attempt == attempts:
                raise StoreError(f"could not store the labels: another writer kept clashing "
                                 f"({str(exc.orig).splitlines()[0]})", where=where,
                                 fix="run the import again") from None
            time.sleep(0.05 * attempt)
            continue
        return ImportResult(len(ids), created, already, PREDICTION_ID if by_id else "record")
    raise AssertionError("unreachable")


def _store(project: Project, where: str, rows: list[tuple[str | None, Any, str | None]]) -> tuple[int, int]:
    """Check every row and store the new ones in one transaction; (created, already)."""
    from dataflywheel.feedback.labels import LabelChecker

    labels = LabelChecker()
    created = already = 0
    with project.metadata.transaction() as s:
        predictions = _by_id(s, PredictionRow, PredictionRow.id, {pid for pid, _, _ in rows if pid is not None})
        checked: list[tuple[str, Any, str]] = []
        for i, (pid, label, key) in enumerate(rows):
            row_where = f"{where} row {i + 1}"
            if pid is None or label is None:
                raise DataError(f"{'prediction_id' if pid is None else 'label'} is missing", where=row_where)
            prediction = predictions.get(pid)
            if prediction is None:
                raise NotFoundError(f"no prediction {pid!r}", where=row_where,
                                    fix="use prediction ids returned by /v1/predict")
            try:
                stored = labels(prediction, label, session=s)
            except FlywheelError as exc:
                raise DataError(exc.message, where=row_where, fix=exc.fix) from None
            checked.append((pid, stored, key or idempotency_key(pid, stored)))
        seen = {f.idempotency_key: (f.prediction_id, f.kind, f.value, "an earlier import or request")
                for f in _by_id(s, FeedbackRow, FeedbackRow.idempotency_key, {k for _, _, k in checked}).values()}
        for i, (pid, stored, key) in enumerate(checked):
            value = {"label": stored}
            first = seen.get(key)
            if first is not None:
                if first[0] != pid or first[1] != "label" or not same_value(first[2], value):
                    raise DataError(f"idempotency key {key!r} was used by {first[3]} for other feedback "
                                    f"(prediction {first[0]!r}, {first[2]})", where=f"{where} row {i + 1}",
                                    fix="give new feedback a new idempotency_key")
                already += 1
                continue
            seen[key] = (pid, "label", value, f"row {i + 1}")
            s.add(FeedbackRow(id=new_id(), prediction_id=pid, kind="label", value=value, idempotency_key=key))
            created += 1
    return created, already


def _by_id(s: Session, table: type[Any], column: Any, values: set[str], chunk: int = 500) -> dict[str, Any]:
    """Rows of ``table`` whose ``column`` is one of ``values``, by that value (looked up in chunks)."""
    wanted = sorted(values)
    out: dict[str, Any] = {}
    for i in range(0, len(wanted), chunk):
        for row in s.scalars(select(table).where(column.in_(wanted[i : i + chunk]))):
            out[getattr(row, column.key)] = row
    return out
