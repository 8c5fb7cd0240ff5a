"""The next dataset version of a generation model: feedback on its completions as SFT rows,
preference pairs and unpaired good/bad labels.

Each feedback row names a logged completion (a response of the generation server: its prompt in
``input``, its choices in ``output``) and one of its choices (``choice_index``). What it becomes:

==============  =====================================================================
kind            rows
==============  =====================================================================
``thumbs``      up: an SFT row (prompt, the answer) and a good label; down: a bad label
``rating``      >= ``retrain.feedback.min_rating``: an SFT row and a good label;
                <= ``bad_rating``: a bad label; between: nothing
``correction``  an SFT row (prompt, the correction) and a pair (the correction chosen
                over the answer); a correction equal to the answer is an SFT row only
``choice``      a pair (the chosen answer over each other answer to the same prompt)
==============  =====================================================================

``comment`` rows train nothing and are never read here. Only the newest row per (completion,
kind, choice) counts (:func:`latest_rows`); older ones are ``dropped`` (superseded), and so are
rows that teach nothing: a middling rating, a kind ``retrain.feedback.kinds`` leaves out (a later
config does not read them again), a choice between identical answers. A row whose completion
cannot be read (no prompt, no such choice) is ``rejected`` and tried again by the next version.

Where a row goes is a hash of its prompt, so one prompt never lands in both training and
evaluation: ``holdout`` for a share ``evaluate.feedback_holdout`` (scored by the gate, never
trained on), else ``valid`` or ``train`` in the proportion of ``data.split``; a prompt of the
parent's test split or held-out feedback is always held out. SFT rows join the train and
valid splits (held-out ones ``holdout.parquet``, as for classifiers); pairs and labels are
``pairs.parquet`` and ``labels.parquet`` with a ``split`` column and the feedback id of each
row, each holding the parent's rows plus the new ones. A duplicate (an SFT row equal to one the
version holds, a (prompt, chosen, rejected) triple seen before) is dropped; several different
pairs per prompt are kept. The version's report counts what each kind contributed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl
from sqlalchemy import select

from dataflywheel.config.serving import TRAINED_COMPLETION_KINDS
from dataflywheel.data.chat import split_conversation
from dataflywheel.data.dataset import SPLITS, DatasetVersion, NewVersion, data_config_hash, version_id, write_version
from dataflywheel.feedback.completion_feedback import choices_per_prompt, feedback_target
from dataflywheel.feedback.log import FeedbackRow, PredictionRow

if TYPE_CHECKING:
    from dataflywheel.config import FlywheelConfig
    from dataflywheel.feedback.trainingset import TrainingSet
    from dataflywheel.store import Project

PAIRS, LABELS = "pairs", "labels"
PAIR_COLUMNS = {"prompt": pl.String, "chosen": pl.String, "rejected": pl.String, "split": pl.String,
                "feedback_id": pl.String, "kind": pl.String}
LABEL_COLUMNS = {"prompt": pl.String, "completion": pl.String, "good": pl.Boolean, "split": pl.String,
                 "feedback_id": pl.String, "kind": pl.String}


@dataclass(frozen=True)
class Pending:
    """A feedback row on a completion, with the completion's logged input and output."""

    id: str
    prediction_id: str
    kind: str
    value: dict[str, Any]
    input: dict[str, Any]
    output: dict[str, Any]


@dataclass
class Products:
    """What the pending feedback becomes, before duplicates are dropped and roles assigned."""

    sft: list[tuple[str, str, str]] = field(default_factory=list)
    """(feedback id, prompt, completion)."""
    pairs: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    """(feedback id, prompt, chosen, rejected, kind)."""
    labels: list[tuple[str, str, str, bool, str]] = field(default_factory=list)
    """(feedback id, prompt, completion, good, kind)."""
    prompts: dict[str, str] = field(default_factory=dict)
    """Feedback id -> the prompt it is about."""
    rejected: dict[str, list[str]] = field(default_factory=dict)
    """Why -> feedback ids that could not be read (retried by the next version)."""
    skipped: dict[str, list[str]] = field(default_factory=dict)
    """Why -> feedback ids that teach nothing (a kind not used, a middling rating): dropped."""
    kind_of: dict[str, str] = field(default_factory=dict)
    """Feedback id -> its kind, for the rows that produced something."""


def choice_key(row: Pending) -> tuple[str, str, int | None]:
    """What a newer row replaces: the same completion, kind and choice (a ``choice`` row: the
    same prompt's choices), as :func:`~dataflywheel.feedback.completion_feedback.feedback_target` reads it."""
    return row.prediction_id, row.kind, feedback_target(row, choices_per_prompt(row))


def latest_rows(rows: list[Pending]) -> tuple[list[Pending], list[str]]:
    """The newest row per :func:`choice_key` (``rows`` oldest first), in order, and the ids of
    the rows they replace."""
    newest = {choice_key(row): row.id for row in rows}
    kept = set(newest.values())
    return [r for r in rows if r.id in kept], [r.id for r in rows if r.id not in kept]


def completion_prompt(logged_input: dict[str, Any], index: int, n: int) -> str | None:
    """The prompt of choice ``index`` (``n`` choices per prompt) as a dataset stores prompts (one
    user turn as its text, a longer conversation as the JSON of its messages;
    :mod:`dataflywheel.data.chat`); a raw completion prompt is read as one user turn. None when
    the input holds no prompt."""
    messages = logged_input.get("messages")
    if isinstance(messages, list) and messages:
        return split_conversation([*messages, {"role": "assistant", "content": ""}])[0]
    prompt = logged_input.get("prompt")
    if isinstance(prompt, list):
        prompt = prompt[index // n] if index // n < len(prompt) else None
    return prompt if isinstance(prompt, str) else None


def choice_text(output: dict[str, Any], index: int) -> str | None:
    choices = output.get("choices") or []
    return str(choices[index]["text"]) if 0 <= index < len(choices) else None


def siblings(output: dict[str, Any], index: int, n: int) -> list[int]:
    """The other choices answering the same prompt as choice ``index`` (``n`` per prompt)."""
    first = index // n * n
    return [i for i in range(first, min(first + n, len(output.get("choices") or []))) if i != index]


def products(rows: list[Pending], min_rating: int, bad_rating: int, kinds: Iterable[str]) -> Products:
    """What each row becomes (the table in the module docstring)."""
    wanted = set(kinds)
    out = Products()

    def reject(fid: str, why: str) -> None:
        out.rejected.setdefault(why, []).append(fid)

    def skip(fid: str, why: str) -> None:
        out.skipped.setdefault(why, []).append(fid)

    for row in rows:
        if row.kind not in wanted:
            skip(row.id, f"{row.kind} not in retrain.feedback.kinds")
            continue
        value = row.value
        index = int(value.get("choice", value.get("choice_index", 0)))
        n = choices_per_prompt(row)
        prompt = completion_prompt(row.input, index, n)
        answer = choice_text(row.output, index)
        if prompt is None or answer is None:
            reject(row.id, "the completion holds no prompt or no such choice")
            continue
        out.prompts[row.id] = prompt
        made = True
        if row.kind == "thumbs":
            good = value.get("thumbs") == "up"
            if good:
                out.sft.append((row.id, prompt, answer))
            out.labels.append((row.id, prompt, answer, good, row.kind))
        elif row.kind == "rating":
            rating = int(value["rating"])
            if rating >= min_rating:
                out.sft.append((row.id, prompt, answer))
                out.labels.append((row.id, prompt, answer, True, row.kind))
            elif rating <= bad_rating:
                out.labels.append((row.id, prompt, answer, False, row.kind))
            else:
                made = False
                skip(row.id, "rating between bad_rating and min_rating")
        elif row.kind == "correction":
            correction = str(value["correction"])
            out.sft.append((row.id, prompt, correction))
            if correction != answer:
                out.pairs.append((row.id, prompt, correction, answer, row.kind))
        elif row.kind == "choice":
            others = [t for i in siblings(row.output, index, n)
                      if (t := choice_text(row.output, i)) is not None and t != answer]
            out.pairs.extend((row.id, prompt, answer, t, row.kind) for t in others)
            if not others:
                made = False
                skip(row.id, "chosen answer the same as the others")
        if made:
            out.kind_of[row.id] = row.kind
        else:
            out.prompts.pop(row.id, None)
    return out


def pending_completion_feedback(project: Project, pending_ids: Any) -> list[Pending]:
    """The rows of ``pending_ids`` (a select of feedback ids) with their completions, oldest first."""
    q = (select(FeedbackRow.id, FeedbackRow.prediction_id, FeedbackRow.kind, FeedbackRow.value,
                PredictionRow.input, PredictionRow.output)
         .join(PredictionRow, PredictionRow.id == FeedbackRow.prediction_id)
         .where(FeedbackRow.id.in_(pending_ids), FeedbackRow.kind.in_(TRAINED_COMPLETION_KINDS))
         .order_by(FeedbackRow.created_at, FeedbackRow.id))
    with project.metadata.transaction() as s:
        return [Pending(r[0], r[1], r[2], dict(r[3] or {}), dict(r[4] or {}), dict(r[5] or {}))
                for r in s.execute(q).all()]


def extra_frame(dataset: DatasetVersion, name: str) -> pl.DataFrame:
    """``pairs`` or ``labels`` of ``dataset`` (empty when it has none)."""
    schema = PAIR_COLUMNS if name == PAIRS else LABEL_COLUMNS
    path = dataset.path / f"{name}.parquet"
    return pl.read_parquet(path) if path.is_file() else pl.DataFrame(schema=schema)


def preference_pairs(dataset: DatasetVersion, split: str) -> pl.DataFrame:
    """The pairs of ``dataset`` in ``split`` (train, valid or holdout): prompt, chosen, rejected."""
    return extra_frame(dataset, PAIRS).filter(pl.col("split") == split).select("prompt", "chosen", "rejected")


def held_out_pairs(dataset: DatasetVersion) -> pl.DataFrame | None:
    """The pairs ``dataset`` holds out for the gate (None when it has none)."""
    pairs = preference_pairs(dataset, "holdout")
    return pairs if pairs.height else None


def build_completion_version(cfg: FlywheelConfig, project: Project, parent: DatasetVersion, pending_ids: Any, *,
                             log: Callable[[str], None] = lambda _msg: None) -> TrainingSet | None:
    """The next version of a generation model's ``parent`` from the completion feedback
    ``pending_ids`` selects (module docstring); None when there is none."""
    from dataflywheel.feedback.trainingset import (
        HOLDOUT,
        REJECTED,
        TrainingSet,
        describe_rejected,
        existing_version,
        fingerprint,
        holdout_frame,
        unit_hash,
    )

    rows = pending_completion_feedback(project, pending_ids)
    if not rows:
        return None
    all_ids = [r.id for r in rows]
    prompt_col, target = cfg.data.prompt_column, cfg.data.target
    inputs = [prompt_col]
    vid = version_id(fingerprint(all_ids, inputs), data_config_hash(cfg.data, cfg.model.task), [parent.id])
    if (reused := existing_version(project, parent, vid, len(all_ids), log)) is not None:
        return reused

    fb = cfg.retrain.feedback
    latest, superseded = latest_rows(rows)
    made = products(latest, fb.min_rating, fb.bad_rating, fb.kinds)
    parts = {name: parent.split(name) for name in SPLITS}
    held = holdout_frame(parent)
    train = parts["train"]
    evaluated = set(parts["test"][prompt_col].to_list())
    if held is not None:
        evaluated |= set(held[prompt_col].to_list())
    split = cfg.data.split
    valid_share = split.valid / (split.train + split.valid)

    def role_of(prompt: str) -> str:
        if prompt in evaluated or unit_hash(f"holdout:{prompt}") < cfg.evaluate.feedback_holdout:
            return HOLDOUT
        return "valid" if unit_hash(f"valid:{prompt}") < valid_share else "train"

    # SFT rows: new unless the version holds the same (prompt, completion)
    known = {(p, c) for name in SPLITS for p, c in zip(parts[name][prompt_col], parts[name][target], strict=True)}
    if held is not None:
        known |= set(zip(held[prompt_col], held[target], strict=True))
    sft: dict[str, list[dict[str, Any]]] = {"train": [], "valid": [], HOLDOUT: []}
    useful: set[str] = set()
    for fid, prompt, completion in made.sft:
        if (prompt, completion) in known:
            continue
        known.add((prompt, completion))
        useful.add(fid)
        sft[role_of(prompt)].append({prompt_col: prompt, target: completion})
    old_pairs, old_labels = extra_frame(parent, PAIRS), extra_frame(parent, LABELS)

    def fresh(rows: list[tuple[Any, ...]], held: pl.DataFrame, columns: tuple[str, ...]) -> list[dict[str, Any]]:
        """``rows`` (feedback id, *columns, kind) not in ``held`` nor earlier in ``rows``, as records."""
        seen = set(zip(*(held[c] for c in columns), strict=True))
        out = []
        for fid, *values, kind in rows:
            if tuple(values) in seen:
                continue
            seen.add(tuple(values))
            useful.add(fid)
            out.append(dict(zip(columns, values, strict=True)) | {"split": role_of(values[0]), "feedback_id": fid,
                                                                   "kind": kind})
        return out

    new_pairs = fresh(made.pairs, old_pairs, ("prompt", "chosen", "rejected"))
    new_labels = fresh(made.labels, old_labels, ("prompt", "completion", "good"))

    roles: dict[str, list[str]] = {"train": [], "valid": [], HOLDOUT: []}
    for fid in sorted(useful):
        roles[role_of(made.prompts[fid])].append(fid)
    duplicate = sorted(set(made.prompts) - useful)
    skipped = sorted(f for ids in made.skipped.values() for f in ids)
    roles["dropped"] = sorted({*superseded, *duplicate, *skipped})
    roles[REJECTED] = sorted(f for ids in made.rejected.values() for f in ids)

    def rows_of(role: str) -> pl.DataFrame:
        frame = pl.DataFrame(sft[role], schema={prompt_col: pl.String, target: pl.String})
        return frame.with_columns(pl.lit(None, dtype=d).alias(c) for c, d in train.schema.items()
                                  if c not in frame.columns).select(train.columns).cast(train.schema)

    out = {"train": pl.concat([train, rows_of("train")]), "valid": pl.concat([parts["valid"], rows_of("valid")]),
           "test": parts["test"]}
    holdout = pl.concat(([held.cast(train.schema)] if held is not None else []) + [rows_of(HOLDOUT)])
    pairs = pl.concat([old_pairs, pl.DataFrame(new_pairs, schema=PAIR_COLUMNS)])
    labels = pl.concat([old_labels, pl.DataFrame(new_labels, schema=LABEL_COLUMNS)])
    dropped = {"superseded": len(superseded), "duplicate": len(duplicate),
               **{why: len(ids) for why, ids in made.skipped.items()}}
    reasons = {why: len(ids) for why, ids in made.rejected.items()}
    contributed = {
        "feedback_kinds": dict(Counter(made.kind_of[f] for f in sorted(useful))),
        "sft_rows": {r: len(v) for r, v in sft.items()},
        "preference_pairs": dict(Counter(p["split"] for p in new_pairs)),
        "preference_pairs_by_kind": dict(Counter(p["kind"] for p in new_pairs)),
        "labels": {"good": sum(1 for x in new_labels if x["good"]), "bad": sum(1 for x in new_labels if not x["good"])},
        "pairs_total": pairs.height,
    }
    sizes = {name: out[name].height for name in SPLITS}
    source = f"dataset {parent.id} + {len(all_ids)} completion feedback rows"
    report = {"source": source, "parent": parent.id, "split_sizes": sizes, "feedback_holdout_rows": holdout.height,
              "feedback": {r: len(ids) for r, ids in roles.items()}, "feedback_dropped": dropped,
              "feedback_rejected": reasons, "model_inputs": inputs, "completion_feedback": contributed,
              "test_split": f"frozen: the test split of dataset {parent.id}"}
    dataset = write_version(project, NewVersion(
        id=vid, source=source, fingerprint=fingerprint([f for ids in roles.values() for f in ids], inputs),
        config_hash=data_config_hash(cfg.data, cfg.model.task), target=target,
        n_rows=sum(sizes.values()) + holdout.height, splits=out, schema=parent.schema(), report=report,
        parents=[parent.id], extra={HOLDOUT: holdout, PAIRS: pairs, LABELS: labels}, feedback=roles))
    n_sft = sum(len(v) for v in sft.values())
    log(f"dataset {vid} = dataset {parent.id} + {len(all_ids)} completion feedback rows: "
        f"{n_sft} SFT rows (train +{len(sft['train'])}, valid +{len(sft['valid'])}, held out {len(sft[HOLDOUT])}), "
        f"{len(new_pairs)} preference pairs ({pairs.height} in all), {len(new_labels)} good/bad labels; "
        f"dropped {len(roles['dropped'])}, rejected {len(roles[REJECTED])}{describe_rejected(reasons)}")
    return TrainingSet(dataset, parent.id, roles, dropped, reasons)


def summary(dataset: DatasetVersion) -> dict[str, Any]:
    """What completion feedback contributed to ``dataset`` (its report's counts; empty for
    a version built otherwise)."""
    return dict((dataset.report or {}).get("completion_feedback") or {})

