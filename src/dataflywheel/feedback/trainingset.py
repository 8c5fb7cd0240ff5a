"""The next dataset version: a parent version plus the labelled feedback it does not yet hold.

Each labelled feedback row becomes a data row: its prediction's logged input plus the label as
the target. Rows are validated against the columns the model reads (:func:`model_inputs`: the
schema's columns a challenger of this config takes as input, so a text column an MLP skips is
neither required nor filled), coerced and filled like the parent's (statistics from the
parent's train split), and de-duplicated: the newest label per prediction wins, and a row
identical to one already in the parent (any split) or to an earlier feedback row is dropped. A
row the model cannot use (no usable label, or a missing input whose ``missing`` rule is
``drop``) is ``rejected``: linked for lineage but not held, so the next version tries it again.
A feedback row's role is a deterministic hash of its id: ``holdout`` (share
``evaluate.feedback_holdout``; evaluation only), else ``valid`` or ``train`` in the proportion
of ``data.split``.

The new version's train/valid splits are the parent's plus the feedback rows; its test split is
the parent's, frozen, so a challenger and its champion are compared on the same rows;
``holdout.parquet`` collects the held-out feedback of every ancestor. The id is a content hash
of the parent id, the data config, the model's inputs and the feedback ids, and every feedback
row seen is linked to the version in ``dataset_feedback`` with its role.

A version is *settled* once a model trained on it is registered, or when it holds no row to
train or evaluate on (the retrain that built it concluded there was nothing to train). A
version with such rows but no model is an *orphan* of a retrain that did not finish (killed,
or failed in training): its feedback counts as new (:func:`new_label_count`) and
:func:`remove_orphans` deletes it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl
from sqlalchemy import CompoundSelect, Select, delete, func, or_, select

from dataflywheel.config import FlywheelConfig
from dataflywheel.config.serving import TRAINED_COMPLETION_KINDS
from dataflywheel.data.dataset import (
    SPLITS,
    DatasetVersion,
    NewVersion,
    data_config_hash,
    version_id,
    write_version,
)
from dataflywheel.data.schema import Schema
from dataflywheel.errors import DataError
from dataflywheel.features.inputs import model_inputs
from dataflywheel.feedback.log import FeedbackRow, PredictionRow
from dataflywheel.store import Project
from dataflywheel.store.metadata import (
    DatasetFeedbackRow,
    DatasetParentRow,
    DatasetRow,
    ModelVersionRow,
    RunRow,
)

HOLDOUT = "holdout"
REJECTED = "rejected"
ROLES = ("train", "valid", HOLDOUT, "dropped", REJECTED)
USED_ROLES = ("train", "valid", HOLDOUT)
"""Roles of rows a model is trained or evaluated on."""
HELD_ROLES = (*USED_ROLES, "dropped")
"""Roles of rows a version holds: used, or dropped because their content is there already (a
duplicate) or a newer label of the same prediction is (superseded)."""
_ID = "\0feedback_id"
TRAINABLE_KINDS = ("label", *TRAINED_COMPLETION_KINDS)
"""Feedback kinds a next version can train on: a classifier's labels, feedback on completions
(:mod:`~dataflywheel.feedback.completion_set`); a lone ``comment`` trains nothing."""

SHOWN_WARNINGS = 3
"""Validation warnings on labelled feedback printed one per line; the rest are counted by kind."""


@dataclass
class TrainingSet:
    dataset: DatasetVersion
    parent_id: str
    roles: dict[str, list[str]] = field(default_factory=dict)
    """Feedback ids per role (train, valid, holdout, dropped, rejected)."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Why rows were dropped: superseded, duplicate."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Why rows were rejected (a sentence per reason) and how many."""


def unit_hash(text: str) -> float:
    """A deterministic number in [0, 1) for ``text`` (stable across processes and platforms)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def assign_role(feedback_id: str, holdout: float, valid_share: float) -> str:
    """``holdout`` for a ``holdout`` share of ids, else ``valid`` for ``valid_share`` of the rest."""
    if unit_hash(f"holdout:{feedback_id}") < holdout:
        return HOLDOUT
    return "valid" if unit_hash(f"valid:{feedback_id}") < valid_share else "train"


def holdout_frame(dataset: DatasetVersion) -> pl.DataFrame | None:
    path = dataset.path / f"{HOLDOUT}.parquet"
    return pl.read_parquet(path) if path.is_file() else None


def evaluation_rows(dataset: DatasetVersion, test: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """The rows a challenger and its champion are scored on: the dataset's held-out feedback,
    then ``test`` (``test`` itself, unchanged, when there is none), and their counts. Held-out
    feedback comes first so that a metric capped to the first rows (a generation model's answers,
    ``evaluate.answers.max_prompts``) scores what users said as well as the frozen test split."""
    held = holdout_frame(dataset)
    if held is None or held.height == 0:
        return test, {"test": test.height}
    rows = pl.concat([held.select(test.columns).cast(test.schema), test], how="vertical")
    return rows, {"test": test.height, "feedback_holdout": held.height}


def ancestry(project: Project, dataset_id: str) -> list[str]:
    """``dataset_id`` and all its ancestors, nearest first."""
    seen, todo = [dataset_id], [dataset_id]
    with project.metadata.transaction() as s:
        while todo:
            q = select(DatasetParentRow.parent_id).where(DatasetParentRow.child_id.in_(todo))
            todo = [p for p in dict.fromkeys(s.scalars(q)) if p not in seen]
            seen.extend(todo)
    return seen


def trained_datasets() -> CompoundSelect[str]:
    """Ids of dataset versions a registered model was trained on."""
    return select(RunRow.dataset_id).union(select(ModelVersionRow.dataset_id))


def settled_datasets() -> Select[str]:
    """Ids of settled dataset versions (module docstring): a model was registered from it, or
    it holds no row to train or evaluate on."""
    with_rows = select(DatasetFeedbackRow.dataset_id).where(DatasetFeedbackRow.role.in_(USED_ROLES))
    return select(DatasetRow.id).where(or_(DatasetRow.id.in_(trained_datasets()),
                                           DatasetRow.id.not_in(with_rows)))


def new_label_count(project: Project) -> int:
    """Labelled feedback rows no settled dataset version has seen (the retrain trigger): rows
    of an orphan version count; rows a settled version rejected do not (they are retried by
    the next retrain, but do not trigger one)."""
    seen = select(DatasetFeedbackRow.feedback_id).where(DatasetFeedbackRow.dataset_id.in_(settled_datasets()))
    with project.metadata.transaction() as s:
        q = select(func.count()).select_from(FeedbackRow).where(FeedbackRow.kind.in_(TRAINABLE_KINDS),
                                                                FeedbackRow.id.not_in(seen))
        return int(s.scalar(q) or 0)


def pending_ids(project: Project, parent_id: str, kinds: tuple[str, ...] = TRAINABLE_KINDS) -> Select[str]:
    """Ids of feedback rows of ``kinds`` that ``parent_id`` and its ancestors do not hold."""
    held = select(DatasetFeedbackRow.feedback_id).where(
        DatasetFeedbackRow.dataset_id.in_(ancestry(project, parent_id)), DatasetFeedbackRow.role.in_(HELD_ROLES))
    return select(FeedbackRow.id).where(FeedbackRow.kind.in_(kinds), FeedbackRow.id.not_in(held))


def retrain_due(project: Project, parent_id: str) -> bool:
    """Whether a retrain from ``parent_id`` has anything to consider: a pending labelled row
    (:func:`pending_feedback`) that no version a model was trained on holds."""
    pending = pending_ids(project, parent_id)
    used = select(DatasetFeedbackRow.feedback_id).where(
        DatasetFeedbackRow.dataset_id.in_(trained_datasets()), DatasetFeedbackRow.role.in_(HELD_ROLES))
    with project.metadata.transaction() as s:
        q = select(func.count()).select_from(pending.where(FeedbackRow.id.not_in(used)).subquery())
        return bool(s.scalar(q))


def remove_orphans(project: Project, log: Callable[[str], None] = lambda _msg: None) -> list[str]:
    """Delete the orphan dataset versions (module docstring) and their folders; their ids.
    Call it only while holding the retrain lock: a retrain under way has an unsettled version."""
    with project.metadata.transaction() as s:
        built = select(DatasetFeedbackRow.dataset_id).where(DatasetFeedbackRow.role.in_(USED_ROLES))
        orphans = list(s.scalars(select(DatasetRow).where(DatasetRow.id.in_(built),
                                                          DatasetRow.id.not_in(settled_datasets()))))
        ids = [d.id for d in orphans]
        if ids:
            s.execute(delete(DatasetFeedbackRow).where(DatasetFeedbackRow.dataset_id.in_(ids)))
            s.execute(delete(DatasetParentRow).where(DatasetParentRow.child_id.in_(ids)))
            s.execute(delete(DatasetRow).where(DatasetRow.id.in_(ids)))
    for d in orphans:
        project.artifacts.remove(d.artifact)
        log(f"dataset {d.id} ({d.source}) was left by a retrain that did not finish: removed; "
            "its feedback is pending again")
    return ids


def pending_feedback(project: Project, parent_id: str) -> pl.DataFrame:
    """Labelled feedback not held by ``parent_id`` or its ancestors (rows they rejected
    included), joined to the logged input: columns ``feedback_id``, ``prediction_id``,
    ``created_at``, ``input``, ``label``."""
    pending = pending_ids(project, parent_id, ("label",))
    q = (select(FeedbackRow.id, FeedbackRow.prediction_id, FeedbackRow.created_at, FeedbackRow.value,
                PredictionRow.input)
         .join(PredictionRow, PredictionRow.id == FeedbackRow.prediction_id)
         .where(FeedbackRow.id.in_(pending))
         .order_by(FeedbackRow.created_at, FeedbackRow.id))
    with project.metadata.transaction() as s:
        rows = s.execute(q).all()
    return pl.DataFrame(
        {"feedback_id": [r[0] for r in rows], "prediction_id": [r[1] for r in rows],
         "created_at": [r[2] for r in rows], "input": [json.dumps(r[4]) for r in rows],
         "label": [json.dumps((r[3] or {}).get("label")) for r in rows]},
        schema={"feedback_id": pl.String, "prediction_id": pl.String, "created_at": pl.Datetime("us", "UTC"),
                "input": pl.String, "label": pl.String},
    )


def _as_table(pending: pl.DataFrame, target: str) -> pl.DataFrame:
    records = [{**json.loads(inp), target: json.loads(lab)}
               for inp, lab in zip(pending["input"], pending["label"], strict=True)]
    table = pl.DataFrame(records, infer_schema_length=None) if records else pl.DataFrame()
    return table.with_columns(pending["feedback_id"].alias(_ID))


def _conform(table: pl.DataFrame, cfg: FlywheelConfig, parent: DatasetVersion, train: pl.DataFrame,
             inputs: list[str]) -> tuple[pl.DataFrame, dict[str, list[str]], list[str]]:
    """Validate ``table`` against the model's ``inputs`` (and the target), coerce, fill and cast
    it to the parent's columns (a column the model does not read stays empty); return it, the
    feedback ids rejected per reason and the warnings of the validation."""
    from dataflywheel.data.anomalies import validate_batch
    from dataflywheel.data.cleaning import Clipper, Imputer, coerce_types

    schema = parent.schema()
    target = cfg.data.target
    wanted = {*inputs, target}
    read = Schema([c for c in schema.columns if c.name in wanted], target=target, n_rows=schema.n_rows)
    table = table.drop([c for c in schema.names if c not in wanted], strict=False)
    report = validate_batch(table.drop(_ID), read, cfg.validation)
    if report.failed:
        first = next(a for a in report.anomalies if a.severity == "fail")
        raise DataError(f"labelled feedback does not match the model's inputs in dataset {parent.id}: "
                        f"{first.kind}: {first.detail}", where=f"feedback column '{first.column}'",
                        fix="fix the logged inputs or relax the policy in flywheel.yaml validation")
    warnings = [f"{a.kind} {a.column or '-'}: {a.detail}" for a in report.anomalies]
    table, _failures = coerce_types(table, read, "coerce", "feedback")
    table = table.with_columns(
        (table[c].cast(dtype, strict=False) if c in table.columns else pl.lit(None, dtype=dtype)).alias(c)
        for c, dtype in train.schema.items()
    ).select([*train.columns, _ID])
    rejected: dict[str, list[str]] = {}

    def reject(mask: pl.Expr, why: str) -> pl.DataFrame:
        ids = table.filter(mask)[_ID].to_list()
        if ids:
            rejected[why] = sorted(ids)
        return table.filter(~mask)

    table = reject(pl.col(target).is_null(), f"no label the target {target!r} ({train.schema[target]}) can hold")
    imputer = Imputer(read, cfg.data.processing.missing, target=target).fit(train)
    for column in imputer.drop_columns_:
        kind = read.column(column).type
        table = reject(pl.col(column).is_null(), f"input {column!r} missing (data.processing.missing.{kind}: drop)")
    table, _ = imputer.transform(table)
    if cfg.data.processing.clip_quantiles is not None:
        numbers = [c.name for c in read.features if c.type == "number" and c.name in train.columns]
        table, _ = Clipper(numbers, cfg.data.processing.clip_quantiles).fit(train).transform(table)
    return table, rejected, warnings


def fingerprint(feedback_ids: list[str], inputs: list[str]) -> str:
    text = "feedback\0" + "\0".join(sorted(feedback_ids)) + "\0inputs\0" + "\0".join(inputs)
    return hashlib.sha256(text.encode()).hexdigest()


def build_next_version(
    cfg: FlywheelConfig, project: Project, parent: DatasetVersion, *, task: str | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> TrainingSet | None:
    """The next version of ``parent`` with its pending feedback, built by the ``task`` of the
    model trained on it (:meth:`~dataflywheel.tasks.Task.next_version`; default the
    configured task); None when there is none."""
    from dataflywheel.tasks import get_task

    name = task or cfg.model.task
    if name != "auto":
        built: TrainingSet | None = get_task(name).next_version(cfg, project, parent, log)
        return built
    return build_label_version(cfg, project, parent, log=log)


def build_label_version(
    cfg: FlywheelConfig, project: Project, parent: DatasetVersion, *,
    log: Callable[[str], None] = lambda _msg: None,
) -> TrainingSet | None:
    """The next version of ``parent`` with its pending labelled feedback; None when there is none.
    An existing version with the same content is reused (``dataset.reused``)."""
    pending = pending_feedback(project, parent.id)
    if pending.height == 0:
        return None
    all_ids = pending["feedback_id"].to_list()
    inputs = model_inputs(cfg, parent.schema())
    vid = version_id(fingerprint(all_ids, inputs), data_config_hash(cfg.data, cfg.model.task), [parent.id])
    if (reused := existing_version(project, parent, vid, len(all_ids), log)) is not None:
        return reused

    target = cfg.data.target
    split = cfg.data.split
    latest = pending.unique(subset="prediction_id", keep="last", maintain_order=True)
    superseded = sorted(set(all_ids) - set(latest["feedback_id"]))
    parts = {name: parent.split(name) for name in SPLITS}
    held = holdout_frame(parent)
    train = parts["train"]
    table, rejected, warnings = _conform(_as_table(latest, target), cfg, parent, train, inputs)
    for warning in warnings[:SHOWN_WARNINGS]:
        log(f"labelled feedback: warning: {warning}")
    if len(warnings) > SHOWN_WARNINGS:
        rest = Counter(w.split(" ", 1)[0] for w in warnings[SHOWN_WARNINGS:])
        log(f"labelled feedback: {len(warnings) - SHOWN_WARNINGS} more warnings ("
            + ", ".join(f"{kind} {n}" for kind, n in rest.most_common()) + ")")

    # duplicates are compared on what the model reads: the other columns of feedback rows are empty
    compared = [c for c in train.columns if c in {*inputs, target}]
    known = pl.concat([parts[n] for n in SPLITS] + ([held.cast(train.schema)] if held is not None else []))
    seen = known.select(compared).hash_rows().unique()
    hashes = table.select(compared).hash_rows()
    fresh = ~hashes.is_in(seen.implode()) & hashes.is_first_distinct()
    duplicate = sorted(set(table.filter(~fresh)[_ID]))
    table = table.filter(fresh)

    valid_share = split.valid / (split.train + split.valid)
    role = [assign_role(f, cfg.evaluate.feedback_holdout, valid_share) for f in table[_ID]]
    table = table.with_columns(pl.Series("\0role", role, dtype=pl.String))
    roles: dict[str, list[str]] = {
        r: sorted(table.filter(pl.col("\0role") == r)[_ID]) for r in ("train", "valid", HOLDOUT)
    }
    roles["dropped"] = sorted({*superseded, *duplicate})
    roles[REJECTED] = sorted(f for ids in rejected.values() for f in ids)

    def rows(r: str) -> pl.DataFrame:
        return table.filter(pl.col("\0role") == r).select(train.columns)

    out = {"train": pl.concat([train, rows("train")]), "valid": pl.concat([parts["valid"], rows("valid")]),
           "test": parts["test"]}
    holdout = pl.concat(([held.cast(train.schema)] if held is not None else []) + [rows(HOLDOUT)])
    dropped = {"superseded": len(superseded), "duplicate": len(duplicate)}
    reasons = {why: len(ids) for why, ids in rejected.items()}
    dataset = _write(cfg, project, parent, vid, out, holdout, roles, dropped, reasons, inputs)
    log(f"dataset {vid} = dataset {parent.id} + {len(all_ids)} labelled feedback rows: "
        f"train +{len(roles['train'])}, valid +{len(roles['valid'])}, held out {len(roles[HOLDOUT])}, "
        f"dropped {len(roles['dropped'])} ({', '.join(f'{k} {v}' for k, v in dropped.items() if v) or 'none'}), "
        f"rejected {len(roles[REJECTED])}{describe_rejected(reasons)}")
    return TrainingSet(dataset, parent.id, roles, dropped, reasons)


def existing_version(project: Project, parent: DatasetVersion, vid: str, n_feedback: int,
                     log: Callable[[str], None]) -> TrainingSet | None:
    """The version ``vid`` when it exists already (the same parent and feedback), else None."""
    existing = project.metadata.dataset(vid)
    if existing is None or not project.artifacts.exists(existing.artifact):
        return None
    log(f"dataset {vid} (dataset {parent.id} + the same {n_feedback} feedback rows) exists: reused")
    report = existing.report or {}
    return TrainingSet(DatasetVersion.from_row(existing, project, [parent.id]), parent.id,
                       linked_roles(project, vid), dict(report.get("feedback_dropped") or {}),
                       dict(report.get("feedback_rejected") or {}))


def describe_rejected(reasons: dict[str, int]) -> str:
    """`` (3: why; 2: why)`` for rejection counts per reason, or the empty string."""
    return f" ({'; '.join(f'{n}: {why}' for why, n in reasons.items())})" if reasons else ""


def _write(cfg: FlywheelConfig, project: Project, parent: DatasetVersion, vid: str, splits: dict[str, pl.DataFrame],
           holdout: pl.DataFrame, roles: dict[str, list[str]], dropped: dict[str, int], rejected: dict[str, int],
           inputs: list[str]) -> DatasetVersion:
    sizes = {name: splits[name].height for name in SPLITS}
    source = f"dataset {parent.id} + {sum(len(v) for v in roles.values())} feedback rows"
    report = {"source": source, "parent": parent.id, "split_sizes": sizes, "feedback_holdout_rows": holdout.height,
              "feedback": {r: len(ids) for r, ids in roles.items()}, "feedback_dropped": dropped,
              "feedback_rejected": rejected, "model_inputs": inputs,
              "test_split": f"frozen: the test split of dataset {parent.id}"}
    return write_version(project, NewVersion(
        id=vid, source=source, fingerprint=fingerprint([f for ids in roles.values() for f in ids], inputs),
        config_hash=data_config_hash(cfg.data, cfg.model.task), target=cfg.data.target,
        n_rows=sum(sizes.values()) + holdout.height, splits=splits, schema=parent.schema(), report=report,
        parents=[parent.id], extra={HOLDOUT: holdout}, feedback=roles))


def linked_roles(project: Project, dataset_id: str) -> dict[str, list[str]]:
    with project.metadata.transaction() as s:
        rows = s.execute(select(DatasetFeedbackRow.feedback_id, DatasetFeedbackRow.role)
                         .where(DatasetFeedbackRow.dataset_id == dataset_id)).all()
    out: dict[str, list[str]] = {r: [] for r in ROLES}
    for fid, role in rows:
        out.setdefault(role, []).append(fid)
    return {r: sorted(v) for r, v in out.items()}
