"""``flywheel feedback import FILE``: offline feedback for logged predictions and completions.

The file (CSV, TSV, JSON lines, JSON or Parquet) holds the feedback and either

* a ``prediction_id`` (or ``completion_id``: one id space) column: each row is attached to that
  logged prediction or completion; or
* the record itself (the feature columns as sent to ``/v1/predict``) and a ``label``: each row
  is matched to the most recent logged prediction whose input is identical (numbers compared as
  floats).

The feedback is what ``/v1/feedback`` takes: a ``label`` (a classifier's or a regression model's
prediction), or on a completion one of ``thumbs`` (up, down), ``rating`` (1-5), ``correction``
(the corrected answer), ``choice`` (the preferred choice of a response with ``n`` >= 2) or
``comment`` alone, with ``choice_index`` (which choice it is about) and an optional ``comment``
beside (:mod:`~dataflywheel.feedback.completion_feedback`). A row holds one kind; the cells of the
other columns are empty (null). Corrections and comments are PII-redacted with the project's
``privacy`` settings before they are stored.

Decision: a row that names an unknown id, whose record matches no logged prediction, or whose
feedback fails its check, is an error naming its row, and NOTHING from the file is stored.
Feedback must belong to a prediction (the ``feedback`` table requires it, and lineage and live
accuracy rely on it); labelled rows that were never served are new training data: add them to
the source.

Feedback is checked like ``/v1/feedback`` checks it (by the task of the model version that made
the prediction: one of its classes, a number for regression, a rating from 1 to 5, a choice in
range, ...). The whole file is one transaction, and importing it again adds nothing: each row
has an idempotency key, its ``idempotency_key`` column where the file has one, else a hash of
(prediction, feedback). As with ``/v1/feedback``, a key already stored for other feedback
(another prediction, kind or value) is an error naming the row and the key. Two imports of one
file at once store each row once; the later one reports them already imported. The rows of a
file are stored a microsecond apart in file order, so where two rows give the same kind of
feedback on the same choice the later row is the newer (the one that wins).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from dataflywheel.errors import DataError, FlywheelError, NotFoundError, StoreError
from dataflywheel.feedback.completion_feedback import FIELDS, KIND_FIELDS, KindError, feedback_kind
from dataflywheel.feedback.log import FeedbackRow, PredictionRow, new_id, same_value
from dataflywheel.store import Project
from dataflywheel.store.metadata import utcnow

if TYPE_CHECKING:
    from dataflywheel.config import PrivacyConfig

LABEL = "label"
PREDICTION_ID = "prediction_id"
COMPLETION_ID = "completion_id"
KEY = "idempotency_key"
_READERS = {".csv": pl.read_csv, ".tsv": lambda p: pl.read_csv(p, separator="\t"), ".json": pl.read_json,
            ".parquet": pl.read_parquet}
_JSON_LINES = (".jsonl", ".ndjson")
"""Read line by line (each line a JSON object, its values as written): a column whose type
changes from row to row, a bad row among good ones, is then that row's error, not the file's."""


@dataclass
class ImportResult:
    rows: int
    created: int
    already: int
    """Rows whose (prediction, feedback) was imported before: skipped."""
    matched_by: str
    """``prediction_id`` or ``record``."""


@dataclass(frozen=True)
class FeedbackFile:
    """A feedback file as read: its column names (first seen first) and its rows (every column
    in each, None where a row has no value)."""

    columns: list[str]
    rows: list[dict[str, Any]]

    def column(self, name: str) -> list[Any]:
        return [r.get(name) for r in self.rows]


def read_feedback_file(path: str | Path) -> FeedbackFile:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _READERS and suffix not in _JSON_LINES:
        raise DataError(f"cannot read a {path.suffix or 'extension-less'} file", where=str(path),
                        fix=f"use one of {', '.join([*_READERS, *_JSON_LINES])}")
    if not path.is_file():
        raise DataError("file not found", where=str(path))
    if suffix in _JSON_LINES:
        records = list(_json_lines(path))
        columns = list(dict.fromkeys(c for r in records for c in r))
        file = FeedbackFile(columns, [{c: r.get(c) for c in columns} for r in records])
    else:
        try:
            df = _READERS[suffix](path)
        except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
            raise DataError(f"cannot read it ({str(exc).splitlines()[0]})", where=str(path)) from None
        file = FeedbackFile(list(df.columns), df.to_dicts())
    if not any(c in file.columns for c in (*KIND_FIELDS, "comment")):
        raise DataError("has no 'label' column (nor thumbs, rating, correction, choice or comment)", where=str(path),
                        fix="give columns prediction_id,label (or the feature columns plus label); on completions "
                            "completion_id with thumbs, rating, correction, choice or comment")
    if not file.rows:
        raise DataError("has no rows", where=str(path))
    return file


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise DataError(f"cannot read it ({exc})", where=str(path)) from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise DataError(f"is not JSON ({exc})", where=f"{path} line {n}") from None
        if not isinstance(record, dict):
            raise DataError(f"is a JSON {type(record).__name__}, not an object", where=f"{path} line {n}",
                            fix="write one JSON object per line")
        yield record


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


def _match_records(project: Project, records: list[dict[str, Any]], columns: list[str], where: str) -> list[str]:
    wanted = {record_key(r, columns): i for i, r in enumerate(records)}
    found: dict[str, str] = {}
    with project.metadata.transaction() as s:
        q = select(PredictionRow.id, PredictionRow.input).order_by(PredictionRow.created_at, PredictionRow.id)
        for pid, inp in s.execute(q.execution_options(yield_per=2000)):
            key = record_key(inp or {}, columns)
            if key is not None and key in wanted:
                found[key] = pid  # later rows win: the most recent prediction
    ids = []
    for i, r in enumerate(records):
        pid = found.get(record_key(r, columns) or "")
        if pid is None:
            raise NotFoundError("no logged prediction has this record's input", where=f"{where} row {i + 1}",
                                fix="import by prediction_id, or add never-served labelled rows to the data source")
        ids.append(pid)
    return ids


def idempotency_key(prediction_id: str, label: Any) -> str:
    """The key of an imported label (``label``: as stored), or of other feedback (its kind
    and stored value as a dict)."""
    text = orjson.dumps(label, option=orjson.OPT_SORT_KEYS).decode() if isinstance(label, dict) else json.dumps(label)
    digest = hashlib.sha256(f"{prediction_id}\0{text}".encode()).hexdigest()[:40]
    return f"import:{digest}"


Row = tuple[str | None, Any, str | None, str | None]
"""(prediction id, a plain label or a dict of feedback fields, idempotency key, the row's error)."""


def _rows(file: FeedbackFile, ids: list[str | None], by_id: bool) -> list[Row]:
    keys = [None if v is None else str(v) for v in file.column(KEY)]
    fields = FIELDS if by_id else (LABEL,)  # matched by record: every other column is the record
    labels_only = not any(c in file.columns for c in FIELDS if c != LABEL)
    rows: list[Row] = []
    for i, record in enumerate(file.rows):
        given = {f: v for f in fields if (v := record.get(f)) is not None and not _nan(v)}
        error = None
        if not given:
            error = "label is missing" if labels_only or not by_id else (
                "no feedback: its label, thumbs, rating, correction, choice and comment are all empty")
        if by_id:
            pid, cid = record.get(PREDICTION_ID), record.get(COMPLETION_ID)
            if pid is not None and cid is not None and str(pid) != str(cid):
                error = "prediction_id and completion_id differ: they name one id space, give one of them"
        value: Any = given.get(LABEL) if given.keys() == {LABEL} else given
        rows.append((ids[i], value, keys[i], error))
    return rows


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def import_feedback(project: Project, path: str | Path, *, attempts: int = 5,
                    privacy: PrivacyConfig | None = None) -> ImportResult:
    """Attach the file's feedback to its predictions (see the module docstring). ``privacy``
    (flywheel.yaml's section) redacts corrections and comments; None: the default PII kinds.

    Another writer may store some of the same keys between this import's reads and its
    commit (two imports of one file at once): the transaction is then run again, up to
    ``attempts`` times, and finds those rows already imported."""
    where = str(path)
    file = read_feedback_file(path)
    by_id = PREDICTION_ID in file.columns or COMPLETION_ID in file.columns
    ids: list[str | None]
    if by_id:
        ids = [None if v is None else str(v)
               for v in (r.get(PREDICTION_ID) if r.get(PREDICTION_ID) is not None else r.get(COMPLETION_ID)
                         for r in file.rows)]
    else:
        if LABEL not in file.columns:
            raise DataError("has no prediction_id or completion_id column", where=where,
                            fix="feedback on completions names them by id; only labels can be matched by record")
        columns = sorted(c for c in file.columns if c not in (LABEL, KEY))
        ids = list(_match_records(project, [{c: r.get(c) for c in columns} for r in file.rows], columns, where))
    rows = _rows(file, ids, by_id)
    for attempt in range(1, attempts + 1):
        try:
            created, already = _store(project, where, rows, privacy)
        except (IntegrityError, OperationalError) as exc:
            if attempt == attempts:
                raise StoreError(f"could not store the feedback: another writer kept clashing "
                                 f"({str(exc.orig).splitlines()[0]})", where=where,
                                 fix="run the import again") from None
            time.sleep(0.05 * attempt)
            continue
        return ImportResult(len(ids), created, already, PREDICTION_ID if by_id else "record")
    raise AssertionError("unreachable")


def _store(project: Project, where: str, rows: list[Row], privacy: PrivacyConfig | None) -> tuple[int, int]:
    """Check every row and store the new ones in one transaction; (created, already)."""
    from dataflywheel.feedback.completion_feedback import text_redactor
    from dataflywheel.feedback.labels import FeedbackChecker

    checker = FeedbackChecker(redactor=text_redactor(privacy))
    created = already = 0
    with project.metadata.transaction() as s:
        predictions = _by_id(s, PredictionRow, PredictionRow.id, {pid for pid, *_ in rows if pid is not None})
        checked: list[tuple[str, str, dict[str, Any], str]] = []
        for i, (pid, value, key, error) in enumerate(rows):
            row_where = f"{where} row {i + 1}"
            if pid is None:
                raise DataError("prediction_id is missing", where=row_where)
            if error is not None:
                raise DataError(error, where=row_where)
            try:
                kind = feedback_kind(value) if isinstance(value, dict) else LABEL
            except KindError as exc:
                raise DataError(exc.message, where=row_where, fix=exc.fix) from None
            prediction = predictions.get(pid)
            if prediction is None:
                raise NotFoundError(f"no prediction {pid!r}", where=row_where,
                                    fix="use prediction ids returned by /v1/predict, or completions' response ids")
            try:
                stored = checker(prediction, value, session=s)
            except FlywheelError as exc:
                raise DataError(exc.message, where=row_where, fix=exc.fix) from None
            stored = stored if isinstance(stored, dict) else {LABEL: stored}
            default_key = idempotency_key(pid, stored[LABEL] if kind == LABEL and len(stored) == 1
                                          else {"kind": kind, **stored})
            checked.append((pid, kind, stored, key or default_key))
        seen = {f.idempotency_key: (f.prediction_id, f.kind, f.value, "an earlier import or request")
                for f in _by_id(s, FeedbackRow, FeedbackRow.idempotency_key, {k for *_, k in checked}).values()}
        now = utcnow()
        for i, (pid, kind, value, key) in enumerate(checked):
            first = seen.get(key)
            if first is not None:
                if first[0] != pid or first[1] != kind or not same_value(first[2], value):
                    raise DataError(f"idempotency key {key!r} was used by {first[3]} for other feedback "
                                    f"(prediction {first[0]!r}, {first[2]})", where=f"{where} row {i + 1}",
                                    fix="give new feedback a new idempotency_key")
                already += 1
                continue
            seen[key] = (pid, kind, value, f"row {i + 1}")
            s.add(FeedbackRow(id=new_id(), prediction_id=pid, created_at=now + timedelta(microseconds=i), kind=kind,
                              value=value, idempotency_key=key))
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
