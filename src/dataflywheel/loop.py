"""The flywheel: run the stages in order, skipping those whose inputs did not change.

data input -> processing (a dataset version, :func:`~dataflywheel.data.dataset.ingest`) -> the
stages of :mod:`dataflywheel.stages`: train -> evaluate -> gate -> register (+ alias decision).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dataflywheel.config import FlywheelConfig, load_config
from dataflywheel.store import Project

if TYPE_CHECKING:
    from dataflywheel.data.dataset import DatasetVersion
    from dataflywheel.stages import StageContext

Log = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


STORE_URL_ENV = "FLYWHEEL_STORE_URL"
"""Overrides ``store.url``: one flywheel.yaml, pointed at another metadata store per machine."""


def open_project(cfg: FlywheelConfig) -> Project:
    import os

    return Project.open(cfg.resolve(cfg.store.root), os.environ.get(STORE_URL_ENV) or cfg.store.url)


def as_config(config: str | Path | FlywheelConfig) -> FlywheelConfig:
    return config if isinstance(config, FlywheelConfig) else load_config(config)


def as_training_config(config: str | Path | FlywheelConfig) -> FlywheelConfig:
    """:func:`as_config` plus the check of ``model.params`` against the model type's declared
    parameters, for commands that go on to train."""
    from dataflywheel.config import check_model_params

    cfg = as_config(config)
    check_model_params(cfg, where="flywheel.yaml" if isinstance(config, FlywheelConfig) else str(config))
    return cfg


def run_key(cfg: FlywheelConfig, dataset_id: str) -> str:
    """Everything that determines a trained model: data version, features, model, train, code."""
    from dataflywheel.lineage import code_version

    payload = {
        "dataset": dataset_id,
        "features": [f.model_dump(mode="json") for f in cfg.data.features],
        "exclude": cfg.data.exclude,
        "model": cfg.model.model_dump(mode="json"),
        "train": cfg.train.model_dump(mode="json"),
        "code": code_version(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class RunResult:
    dataset_id: str
    dataset_reused: bool
    version: int
    trained: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] | None = None
    report: Path | None = None
    champion: int | None = None


def train_and_register(
    cfg: FlywheelConfig,
    project: Project,
    dataset: DatasetVersion,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Log = _quiet,
    force: bool = False,
    actor: str = "flywheel run",
) -> RunResult:
    """Train on ``dataset`` (unless an identical run exists), evaluate, gate, register: the
    stages of :mod:`dataflywheel.stages`, in order."""
    from dataflywheel import stages

    ctx = stages.StageContext(cfg, project, dataset, run_key(cfg, dataset.id), log)
    previous = None if force else previous_run(ctx)
    if previous is not None:
        return previous
    trained = stages.train_stage(ctx, resume=resume, progress=progress)
    evaluated = stages.evaluate_stage(ctx, trained)
    gated = stages.gate_stage(ctx, evaluated)
    registered = stages.register_stage(ctx, trained, evaluated, gated, actor=actor)
    return RunResult(dataset.id, dataset.reused, registered.version, True, evaluated.metrics,
                     gated.verdict.to_dict(), registered.report, registered.champion)


def previous_run(ctx: StageContext) -> RunResult | None:
    """The result of the registered run with this run key (nothing to train), or None."""
    from dataflywheel.registry import versions

    hit = versions.find_run_by_key(ctx.project, ctx.run_key)
    if hit is None:
        return None
    _run, version = hit
    info = versions.resolve(ctx.project, version)
    dataset = ctx.dataset
    ctx.log(f"model v{version} was already trained from dataset {dataset.id} with this config: nothing to train")
    return RunResult(dataset.id, dataset.reused, version, False, info.metrics, info.verdict,
                     ctx.project.artifacts.path(info.artifact) / "report.html",
                     versions.alias_version(ctx.project, versions.CHAMPION))


def run(
    config: str | Path | FlywheelConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Log = _quiet,
) -> RunResult:
    """``flywheel run``: every stage from the source to a registered, evaluated model."""
    from dataflywheel.data.dataset import ingest

    cfg = as_training_config(config)
    project = open_project(cfg)
    try:
        dataset = ingest(cfg, project, log=log)
        return train_and_register(cfg, project, dataset, resume=resume, progress=progress, log=log)
    finally:
        project.close()
