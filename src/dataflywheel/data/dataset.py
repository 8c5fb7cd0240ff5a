"""Dataset versions: the data stages' artifact.

A version's id is a content hash of the source bytes and the data config (target, features,
exclusions, processing, split) plus its parents, so ingesting unchanged inputs again finds the
existing version and does no work. Splits are Parquet files beside ``schema.json`` and
``report.json``; the store row and the folder appear together or not at all. Every version,
ingested or built by a retrain, is written by :func:`write_version`.

PII is redacted (``privacy`` in flywheel.yaml) right after reading, before schema inference, so
no split, statistic or schema ever holds it; the id still hashes the *source* bytes, plus the
privacy settings when they differ from the defaults. Counts per column and kind go to the
version's report under ``privacy``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import polars as pl

from dataflywheel.config import DataConfig, FlywheelConfig, PrivacyConfig
from dataflywheel.errors import ConfigError, NotFoundError
from dataflywheel.store import Project
from dataflywheel.store.metadata import DatasetFeedbackRow, DatasetParentRow, DatasetRow

if TYPE_CHECKING:
    from dataflywheel.config import FeatureType
    from dataflywheel.data.schema import Schema
    from dataflywheel.data.source import Source
    from dataflywheel.privacy import Redactor
    from dataflywheel.tasks import Task

SPLITS = ("train", "valid", "test")
ID_LENGTH = 16
PROCESSING_VERSION = 4
"""2: text columns are redacted of PII by default (privacy section). 3: the split is drawn by
NumPy in one pass (same sizes, other rows than scikit-learn's). 4: a ``drop`` missing-value rule
removes rows only for the columns the model reads (whether it reads text is hashed)."""
PARQUET_COMPRESSION: Final = "lz4"
"""Splits are written with lz4: twice as fast to write and read as zstd, 1.5x the size."""


@dataclass
class DatasetVersion:
    id: str
    path: Path
    target: str
    source: str
    split_sizes: dict[str, int]
    report: dict[str, Any]
    parents: list[str] = field(default_factory=list)
    reused: bool = False

    @property
    def schema_path(self) -> Path:
        return self.path / "schema.json"

    def schema(self) -> Schema:  # Schema is imported lazily: keeps CLI start-up light
        from dataflywheel.data.schema import Schema

        return Schema.load(self.schema_path)

    def split(self, name: str) -> pl.DataFrame:
        return pl.read_parquet(self.path / f"{name}.parquet")

    def train_columns(self, columns: list[str]) -> pl.DataFrame:
        """The train split's ``columns`` that it holds (Parquet reads only those)."""
        path = self.path / "train.parquet"
        present = set(pl.read_parquet_schema(path))
        return pl.read_parquet(path, columns=[c for c in columns if c in present])

    @classmethod
    def from_row(cls, row: DatasetRow, project: Project, parents: list[str], reused: bool = True) -> DatasetVersion:
        return cls(
            id=row.id,
            path=project.artifacts.path(row.artifact),
            target=row.target,
            source=row.source,
            split_sizes=dict(row.split_sizes),
            report=dict(row.report),
            parents=parents,
            reused=reused,
        )


def data_config_hash(cfg: DataConfig, task: str = "auto", privacy: PrivacyConfig | None = None,
                     text_inputs: bool | None = None) -> str:
    """Hash of what changes a version's content: the data config (not the source path), the
    task, which decides whether the split is stratified, and ``text_inputs``, whether the model
    reads text (a text column it does not read never drops rows).

    Only settings that differ from their defaults are hashed, so a release that adds a config
    field keeps every existing id; ``PROCESSING_VERSION`` is bumped instead when a default or the
    processing itself changes what a version contains."""
    payload = {**cfg.model_dump(mode="json", exclude={"source"}, exclude_defaults=True), "task": task,
               "processing_version": PROCESSING_VERSION}
    if privacy is not None and (changed := privacy.model_dump(mode="json", exclude_defaults=True)):
        payload["privacy"] = changed
    if text_inputs is not None:
        payload["text_inputs"] = text_inputs
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def version_config_hash(cfg: FlywheelConfig) -> str:
    """:func:`data_config_hash` of a whole config: what ingesting its source produces."""
    from dataflywheel.features.inputs import reads_text

    return data_config_hash(cfg.data, cfg.model.task, cfg.privacy, reads_text(cfg.model.type))


def version_id(source_fingerprint: str, config_hash: str, parents: Sequence[str] = ()) -> str:
    h = hashlib.sha256()
    for part in (source_fingerprint, config_hash, *sorted(parents)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:ID_LENGTH]


def ingest(
    cfg: FlywheelConfig,
    project: Project,
    *,
    parents: Sequence[str] = (),
    log: Callable[[str], None] = lambda _msg: None,
) -> DatasetVersion:
    """Run data input, schema inference and processing; reuse the version if it exists."""
    from dataflywheel.data.sources import source_from_config

    source = source_from_config(cfg.data.source, cfg.base_dir)
    fingerprint = source.fingerprint()
    config_hash = version_config_hash(cfg)
    vid = version_id(fingerprint, config_hash, list(parents))
    existing = project.metadata.dataset(vid)
    if existing is not None and project.artifacts.exists(existing.artifact):
        log(f"dataset {vid} is up to date (same source bytes and data config): reused, nothing to do")
        return DatasetVersion.from_row(existing, project, project.metadata.dataset_parents(vid))
    # Pass the reader, not the table: build_version then holds the only reference and can free it.
    return build_version(cfg, project, lambda: read_source(cfg, source), source.describe(), fingerprint,
                         list(parents), log=log)


def configured_task(cfg: FlywheelConfig) -> Task | None:
    """The task ``model.task`` names, or None for ``auto`` (inferred from the schema later)."""
    from dataflywheel.tasks import get_task

    return None if cfg.model.task == "auto" else get_task(cfg.model.task)


def read_source(cfg: FlywheelConfig, source: Source) -> pl.DataFrame:
    """The source's table in the columns the configured task learns from (:meth:`Task.shape_frame`:
    generation splits chat data into prompt and completion). ``data.prompt`` for a task that
    reads no prompt is a :class:`ConfigError`."""
    task = configured_task(cfg)
    if cfg.data.prompt is not None and (task is None or not task.reads_prompt):
        from dataflywheel.tasks import all_tasks

        readers = " or ".join(t.name for t in all_tasks() if t.reads_prompt)
        raise ConfigError("applies to a task that learns completions of prompts", where="data.prompt",
                          fix=f"set model.task: {readers}, or remove data.prompt")
    raw = source.read()
    return raw if task is None else task.shape_frame(raw, cfg, source)


def declared_types(cfg: FlywheelConfig) -> dict[str, FeatureType]:
    """Column types set by ``data.features``, then fixed by the task (generation: the prompt and
    the completion are text): what schema inference is told."""
    types: dict[str, FeatureType] = {f.name: f.type for f in cfg.data.features if f.type is not None}
    task = configured_task(cfg)
    if task is not None:
        types.update(task.column_types(cfg.data))
    return types


def build_version(
    cfg: FlywheelConfig,
    project: Project,
    raw: pl.DataFrame | Callable[[], pl.DataFrame],
    source_desc: str,
    fingerprint: str,
    parents: list[str],
    *,
    log: Callable[[str], None] = lambda _msg: None,
) -> DatasetVersion:
    """Process ``raw`` into a new version (or return the existing one with the same id)."""
    from dataflywheel.data.processing import process
    from dataflywheel.data.schema import infer_schema
    from dataflywheel.features.inputs import model_inputs

    config_hash = version_config_hash(cfg)
    vid = version_id(fingerprint, config_hash, parents)
    existing = project.metadata.dataset(vid)
    if existing is not None and project.artifacts.exists(existing.artifact):
        log(f"dataset {vid} is up to date: reused, nothing to do")
        return DatasetVersion.from_row(existing, project, project.metadata.dataset_parents(vid))

    if callable(raw):
        raw = raw()
    raw, redacted = redact_raw(raw, cfg)
    check_excluded(raw, cfg, source_desc)
    excluded = list(cfg.data.exclude)
    raw = raw.drop(excluded) if excluded else raw
    schema = infer_schema(raw, target=cfg.data.target, overrides=declared_types(cfg))
    inputs = model_inputs(cfg, schema)  # no input column: an error now, before any split
    task = None if cfg.model.task == "auto" else cfg.model.task
    n_rows = raw.height
    handover = [raw]
    del raw  # process holds the only reference, so it can free the raw columns as it splits
    processed = process(handover.pop(), schema, cfg.data, where=source_desc, task=task, inputs=inputs)

    report = {"source": source_desc, **processed.report}
    report["excluded"] = list(dict.fromkeys([*excluded, *processed.report["excluded"]]))
    if redacted is not None:
        report["privacy"] = redacted
        total = sum(n for counts in redacted["columns"].values() for n in counts.values())
        if total:
            log(f"redacted {total} PII match(es) in {', '.join(redacted['columns'])}")
    version = write_version(project, NewVersion(
        id=vid, source=source_desc, fingerprint=fingerprint, config_hash=config_hash, target=cfg.data.target,
        n_rows=n_rows, splits=processed.splits, schema=schema, report=report, parents=parents))
    sizes = version.split_sizes
    log(f"dataset {vid}: {n_rows} rows in -> train {sizes['train']}, valid {sizes['valid']}, test {sizes['test']}"
        + removed_summary(report, schema))
    return version


@dataclass
class NewVersion:
    """A dataset version to write (:func:`write_version`)."""

    id: str
    source: str
    """What it was made from, in words."""
    fingerprint: str
    """Of the source bytes (or of what else the version was built from)."""
    config_hash: str
    target: str
    n_rows: int
    """Rows in all the files (splits and extras)."""
    splits: dict[str, pl.DataFrame]
    """The train, valid and test splits."""
    schema: Schema
    report: dict[str, Any]
    parents: list[str] = field(default_factory=list)
    extra: dict[str, pl.DataFrame] = field(default_factory=dict)
    """Further Parquet files by name (held-out feedback)."""
    feedback: dict[str, list[str]] = field(default_factory=dict)
    """Feedback ids per role, linked to the version in ``dataset_feedback``."""


def write_version(project: Project, new: NewVersion) -> DatasetVersion:
    """Write a dataset version: its folder (the splits and extras as Parquet, ``schema.json``,
    ``report.json``), then its row, its parent links and its feedback links. The folder and the
    rows appear together or not at all; a row whose folder was lost is replaced."""
    key = f"datasets/{new.id}"
    sizes = {name: new.splits[name].height for name in SPLITS}
    with project.artifacts.write_dir(key) as tmp:
        for name, frame in {**{name: new.splits[name] for name in SPLITS}, **new.extra}.items():
            frame.write_parquet(tmp / f"{name}.parquet", compression=PARQUET_COMPRESSION)
        new.schema.save(tmp / "schema.json")
        (tmp / "report.json").write_text(json.dumps(new.report, indent=2, default=str), encoding="utf-8")
    try:
        with project.metadata.transaction() as s:
            stale = s.get(DatasetRow, new.id)
            if stale is not None:
                s.delete(stale)
                s.flush()
            s.add(DatasetRow(id=new.id, source=new.source, source_fingerprint=new.fingerprint,
                             config_hash=new.config_hash, target=new.target, n_rows=new.n_rows, split_sizes=sizes,
                             report=new.report, artifact=key))
            s.flush()
            s.add_all(DatasetParentRow(child_id=new.id, parent_id=parent) for parent in new.parents)
            s.add_all(DatasetFeedbackRow(dataset_id=new.id, feedback_id=f, role=role)
                      for role, ids in new.feedback.items() for f in ids)
    except Exception:
        project.artifacts.remove(key)
        raise
    return DatasetVersion(id=new.id, path=project.artifacts.path(key), target=new.target, source=new.source,
                          split_sizes=sizes, report=new.report, parents=list(new.parents), reused=False)


def check_excluded(raw: pl.DataFrame, cfg: FlywheelConfig, source_desc: str) -> None:
    """Raise :class:`ConfigError` when ``data.exclude`` names a column ``raw`` lacks."""
    columns = set(raw.columns)
    unknown = [c for c in cfg.data.exclude if c not in columns]
    if unknown:
        raise ConfigError(f"no column named {unknown[0]!r} in {source_desc}", where="data.exclude",
                          fix=f"remove it or check its spelling (columns: {', '.join(raw.columns[:8])}"
                          f"{', ...' if len(raw.columns) > 8 else ''})")


def removed_summary(report: dict[str, Any], schema: Any) -> str:
    """``"; removed N: ..."`` naming how many rows each processing rule removed ("" for none)."""
    parts = []
    if n := report.get("missing_target_dropped"):
        parts.append(f"{n} without a target")
    if n := report.get("duplicates_removed"):
        on = report.get("duplicate_columns")
        what = f"duplicate{'s' if n != 1 else ''} of {', '.join(on)}" if on else "duplicates"
        parts.append(f"{n} {what} (data.processing.drop_duplicates)")
    for col, n in (report.get("missing_dropped_by") or {}).items():
        kind = schema.column(col).type
        parts.append(f"{n} missing {col} (data.processing.missing.{kind}: drop)")
    if not parts:
        return ""
    total = report["rows_in"] - report["rows_out"]
    return f"; removed {total}: " + ", ".join(parts)


def privacy_columns(raw: pl.DataFrame, cfg: FlywheelConfig) -> list[str]:
    """The columns of ``raw`` that ``privacy`` redacts, checked: listed names must exist (and
    be text), ``text`` means every column that is (or will be inferred as) text, but the target
    (unless the task redacts its target: a generation model's completions are text it learns to
    write)."""
    privacy = cfg.privacy
    excluded = set(cfg.data.exclude)
    task = configured_task(cfg)
    skip_target = task is None or not task.redacts_target
    if isinstance(privacy.columns, list):
        for col in privacy.columns:
            if col not in raw.columns:
                raise ConfigError(f"no column named {col!r} to redact", where="privacy.columns",
                                  fix=f"remove it or check its spelling (columns: {', '.join(raw.columns[:8])}"
                                  f"{', ...' if len(raw.columns) > 8 else ''})")
            if raw[col].dtype not in (pl.String, pl.Null, pl.Categorical):
                raise ConfigError(f"column {col!r} holds {raw[col].dtype}, not text", where="privacy.columns",
                                  fix="list only string columns")
        return [c for c in dict.fromkeys(privacy.columns) if c not in excluded]
    from dataflywheel.data.schema import infer_schema

    declared = declared_types(cfg)
    strings = [c for c, t in raw.schema.items()
               if (c != cfg.data.target or not skip_target) and c not in excluded and t in (pl.String, pl.Categorical)]
    if not strings:
        return []
    schema = infer_schema(raw.select(strings), overrides={c: t for c, t in declared.items() if c in strings})
    return [c.name for c in schema.features if c.type == "text"]


def privacy_redactor(privacy: PrivacyConfig) -> Redactor:
    """The :class:`~dataflywheel.privacy.Redactor` of flywheel.yaml's ``privacy`` section; a bad
    setting is a :class:`ConfigError` naming ``privacy.<field>``."""
    from dataflywheel.privacy import Redactor

    try:
        return Redactor(privacy.kinds, privacy.replacement)
    except ConfigError as exc:
        raise ConfigError(exc.message, where=f"privacy.{exc.where or 'kinds'}", fix=exc.fix) from None


def redact_raw(raw: pl.DataFrame, cfg: FlywheelConfig) -> tuple[pl.DataFrame, dict[str, Any] | None]:
    """``raw`` with PII redacted as ``privacy`` says, and what was done (None when disabled)."""
    privacy = cfg.privacy
    if not privacy.enabled:
        return raw, None
    columns = privacy_columns(raw, cfg)
    counts: dict[str, dict[str, int]] = {}
    if columns:
        redactor = privacy_redactor(privacy)
        cats = [c for c in columns if raw[c].dtype == pl.Categorical]
        if cats:
            raw = raw.with_columns(pl.col(cats).cast(pl.String))
        raw, counts = redactor.redact_frame(raw, columns)
    return raw, {"kinds": list(privacy.kinds), "columns": counts}


def get_version(project: Project, ref: str) -> DatasetVersion:
    """A dataset version by id or unique id prefix; ``latest`` is the newest."""
    from sqlalchemy import select

    with project.metadata.transaction() as s:
        if ref == "latest":
            row = s.scalars(select(DatasetRow).order_by(DatasetRow.created_at.desc()).limit(1)).first()
        else:
            rows = s.scalars(select(DatasetRow).where(DatasetRow.id.startswith(ref))).all()
            row = rows[0] if len(rows) == 1 else None
            if len(rows) > 1:
                raise NotFoundError(f"dataset prefix {ref!r} is ambiguous", fix="give more characters of the id")
    if row is None:
        raise NotFoundError(f"no dataset version {ref!r}", fix="`flywheel data list` shows the versions")
    return DatasetVersion.from_row(row, project, project.metadata.dataset_parents(row.id))


def list_versions(project: Project) -> list[DatasetRow]:
    from sqlalchemy import select

    with project.metadata.transaction() as s:
        return list(s.scalars(select(DatasetRow).order_by(DatasetRow.created_at)))
