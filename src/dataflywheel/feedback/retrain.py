"""``flywheel retrain``: champion's dataset + labelled feedback -> challenger -> gate -> aliases.

The next dataset version is built by :func:`~dataflywheel.feedback.trainingset.build_next_version`
from the dataset of the current champion; a challenger is trained with the same config and
registered by :func:`~dataflywheel.loop.train_and_register`, which scores challenger and
champion on the frozen test split plus the held-out feedback, applies the promotion gate
(:mod:`dataflywheel.evaluate.gate`), records the verdict on the new model version and moves
``champion`` (promoted) or ``challenger`` (rejected).

Idempotent: with no labelled feedback beyond the champion's dataset there is nothing to do, and
retraining on the same feedback again finds the version already trained. One retrain runs at a
time per project (a lock file beside the store); a second one fails fast. A dataset version
left by a retrain that did not finish (killed while training) is removed first, so its
feedback goes into this one. When every new row is rejected (the model cannot use it), the
retrain fails with :class:`FeedbackRejected` naming why; those rows stay pending.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from dataflywheel.config import FlywheelConfig
from dataflywheel.errors import DataError, NotFoundError, StoreError
from dataflywheel.store import Project

Status = Literal["nothing_to_do", "no_usable_rows", "trained", "already_trained"]


@dataclass
class RetrainResult:
    status: Status
    message: str
    parent_dataset: str | None = None
    dataset_id: str | None = None
    feedback: dict[str, int] = field(default_factory=dict)
    """Feedback rows per role in the new dataset version: train, valid, holdout, dropped, rejected."""
    version: int | None = None
    decision: str | None = None
    """``promoted`` or ``rejected`` (None when nothing was trained)."""
    verdict: dict[str, Any] | None = None
    champion: int | None = None
    method: str | None = None
    """How the challenger was trained (``train.method``: sft, dpo, sft+dpo)."""
    built: dict[str, Any] = field(default_factory=dict)
    """Generation models: what the feedback became (SFT rows, preference pairs, labels per split and kind)."""

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class RetrainBusy(StoreError):
    """Another retrain of the same project is running."""


class FeedbackRejected(DataError):
    """Nothing to train: every new labelled feedback row was rejected."""


@contextmanager
def retrain_lock(project: Project) -> Iterator[None]:
    """Hold the project's retrain lock (an advisory ``flock``; released if the process dies)."""
    path = project.root / "retrain.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RetrainBusy("another retrain of this project is running", where=str(path),
                              fix="wait for it to finish") from None
        yield
    finally:
        os.close(fd)


def retrain(
    cfg: FlywheelConfig,
    project: Project,
    *,
    progress: bool = False,
    log: Callable[[str], None] = lambda _msg: None,
) -> RetrainResult:
    """Retrain from the champion's dataset plus pending feedback (module docstring), training as
    ``retrain.method`` says when set (else ``train.method``)."""
    from dataflywheel.data.dataset import get_version
    from dataflywheel.feedback.trainingset import (
        REJECTED,
        USED_ROLES,
        build_next_version,
        describe_rejected,
        remove_orphans,
        retrain_due,
    )
    from dataflywheel.loop import train_and_register
    from dataflywheel.registry import versions

    if cfg.retrain.method is not None and cfg.retrain.method != cfg.train.method:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"method": cfg.retrain.method})})
    with retrain_lock(project):
        champion = versions.alias_version(project, versions.CHAMPION)
        if champion is None:
            raise NotFoundError("no champion model to retrain", fix="run `flywheel run` first")
        info = versions.resolve(project, champion)
        parent = get_version(project, info.dataset_id)
        remove_orphans(project, log)
        # Feedback held by a version a model was trained on (as train, valid, holdout or
        # dropped) gives the same result again; rejected rows are tried again.
        due = retrain_due(project, parent.id)
        built = build_next_version(cfg, project, parent, task=info.task, log=log) if due else None
        if built is None:
            msg = f"no new feedback to train on since dataset {parent.id} (champion v{champion}): nothing to do"
            log(msg)
            return RetrainResult("nothing_to_do", msg, parent.id, champion=champion)
        from dataflywheel.feedback.completion_set import summary

        counts = {role: len(ids) for role, ids in built.roles.items()}
        base = RetrainResult("no_usable_rows", "", parent.id, built.dataset.id, counts, champion=champion,
                             built=summary(built.dataset))
        if not any(counts.get(r) for r in USED_ROLES):
            dropped = ", ".join(f"{k} {v}" for k, v in built.dropped.items() if v)
            if counts.get(REJECTED):
                also = f"; {counts.get('dropped', 0)} dropped ({dropped})" if counts.get("dropped") else ""
                raise FeedbackRejected(
                    f"nothing to train: {counts[REJECTED]} new labelled feedback rows were rejected"
                    f"{describe_rejected(built.rejected)}{also}", where="flywheel retrain",
                    fix="send the inputs the model reads, or change data.processing.missing in flywheel.yaml, "
                        "then retrain (the rejected rows stay pending)")
            base.message = (f"all {counts.get('dropped', 0)} new feedback rows were dropped "
                            f"({dropped or 'duplicates of rows already in the data'}); nothing to train")
            log(base.message)
            return base
        run = train_and_register(cfg, project, built.dataset, progress=progress, log=log, actor="flywheel retrain")
        decision = (run.verdict or {}).get("decision")
        base.version, base.decision, base.verdict, base.champion = run.version, decision, run.verdict, run.champion
        base.method = cfg.train.method
        if run.trained:
            base.status = "trained"
            how = f" ({cfg.train.method})" if base.built else ""
            base.message = (f"model v{run.version} trained{how} on dataset {built.dataset.id}: {decision}; "
                            f"champion v{run.champion}")
        else:
            base.status = "already_trained"
            base.message = (f"model v{run.version} was already trained on this feedback ({decision}): "
                            "nothing to do")
        log(base.message)
        return base
