"""The flywheel: run the stages in order, skipping those whose inputs did not change.

data input -> processing -> features -> training -> evaluation -> registry (+ alias decision).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataflywheel.config import FlywheelConfig, load_config
from dataflywheel.store import Project

Log = Callable[[str], None]
MIN_TEST_ROWS = 20
"""Below this many test rows a run warns that its metrics (and the gate) mean little."""


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
    dataset: Any,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Log = _quiet,
    force: bool = False,
    actor: str = "flywheel run",
) -> RunResult:
    """Train on ``dataset`` (unless an identical run exists), evaluate, register, decide aliases."""
    from dataflywheel.registry import versions

    key = run_key(cfg, dataset.id)
    hit = None if force else versions.find_run_by_key(project, key)
    if hit is not None:
        _run, version = hit
        info = versions.resolve(project, version)
        log(f"model v{version} was already trained from dataset {dataset.id} with this config: nothing to train")
        return RunResult(dataset.id, dataset.reused, version, False, info.metrics, info.verdict,
                         project.artifacts.path(info.artifact) / "report.html",
                         versions.alias_version(project, versions.CHAMPION))

    from dataflywheel.evaluate.stage import choose_threshold, compare_to_champion, evaluate_split
    from dataflywheel.lineage import environment
    from dataflywheel.registry.predictor import Predictor
    from dataflywheel.train.stage import train_on_dataset

    ckpt = project.root / "checkpoints" / key[:16]
    trained = train_on_dataset(cfg, dataset, checkpoint_dir=ckpt, resume=resume, progress=progress, log=log)
    log(trained.history.summary())
    target = cfg.data.target
    meta: dict[str, Any] = {"spec": trained.spec, "task": trained.task, "target_column": target,
                            "target_encoder": trained.target_encoder.to_dict(), "threshold": 0.5,
                            "privacy": cfg.privacy.model_dump(mode="json")}
    predictor = Predictor(Path("."), trained.model, meta, trained.preprocessor, trained.target_encoder,
                          trained.schema)
    meta["threshold"] = predictor.threshold = choose_threshold(predictor, dataset.split("valid"), target)
    test = dataset.split("test")
    if test.height < MIN_TEST_ROWS:
        log(f"warning: the test split has {test.height} rows; its metrics are noise and the promotion "
            f"decision with them (add data or raise data.split.test)")
    evaluation = evaluate_split(predictor, test, target)
    metrics = evaluation.metrics
    # The gate scores both models on the frozen test split plus any held-out feedback.
    from dataflywheel.feedback.trainingset import evaluation_rows

    gate_rows, eval_rows = evaluation_rows(dataset, test)
    gate_metrics = metrics if gate_rows is test else evaluate_split(predictor, gate_rows, target).metrics
    history = trained.history
    for column, count in (trained.truncated or {}).items():
        log(f"text column {column!r}: {count} train text(s) truncated to max_length")
    log(_metrics_line(trained.task, metrics))

    champion_version = versions.alias_version(project, versions.CHAMPION)
    champion = None
    if champion_version is not None:
        from dataflywheel import registry

        champion = registry.load(project, champion_version, base_dir=cfg.base_dir).predictor
    verdict = compare_to_champion(cfg, trained.task, gate_metrics, champion, champion_version, gate_rows,
                                  eval_rows=eval_rows)

    lineage = {
        "dataset_id": dataset.id,
        "dataset_parents": dataset.parents,
        "config_hash": cfg.section_hash("data", "model", "train", "evaluate"),
        "run_key": key,
        "seed": cfg.train.seed,
        "threads": history.threads,
        "device": history.device,
        "n_params": trained.n_params,
        "resumed_from_epoch": history.resumed_from,
        "truncated_texts": trained.truncated or {},
        **environment(),
    }
    epochs = list(history.epochs)

    def write_report(folder: Path) -> None:
        from dataflywheel.evaluate.report import render_report

        render_report(
            folder / "report.html",
            title=f"{cfg.project}: {cfg.model.type} on dataset {dataset.id}",
            task=trained.task,
            metrics=metrics,
            history=epochs,
            y_true=evaluation.y_true,
            scores=evaluation.scores,
            class_names=predictor.class_names,
            lineage={**lineage, "verdict": verdict.decision, "verdict reasons": "; ".join(verdict.reasons)},
            sections=[explanations_section(predictor, test)],
        )

    from dataflywheel.registry.register import register

    version = register(
        project,
        run_key=key,
        dataset_id=dataset.id,
        config=cfg.model_dump(mode="json"),
        history=epochs,
        lineage=lineage,
        model=trained.model,
        model_json=meta,
        preprocessor=trained.preprocessor,
        schema=trained.schema,
        metrics=metrics,
        verdict=verdict.to_dict(),
        extra=write_report,
    )
    reason = "; ".join(verdict.reasons)
    if verdict.decision in ("champion", "promoted"):
        versions.promote(project, version, reason=f"{actor}: {reason}")
    else:
        versions.set_alias(project, versions.CHALLENGER, version, action="challenger", reason=reason)
    log(f"model v{version} registered: {verdict.decision} ({reason})")
    report = project.artifacts.path(f"models/v{version}") / "report.html"
    return RunResult(dataset.id, dataset.reused, version, True, metrics, verdict.to_dict(), report,
                     versions.alias_version(project, versions.CHAMPION))


def explanations_section(predictor: Any, test: Any, n: int = 3) -> tuple[str, str]:
    """A few test rows explained (Integrated Gradients) for the report; never fails the run."""
    from dataflywheel.explain import report_section

    try:
        return report_section(predictor, test, n=n)
    except Exception as exc:  # noqa: BLE001 (an explanation is a nicety; the model is already trained)
        return ("Explanations", f"<p>not available: {type(exc).__name__}: {exc}</p>")


def _metrics_line(task: str, m: dict[str, Any]) -> str:
    from dataflywheel.evaluate.metrics import format_metric
    from dataflywheel.tasks import get_task

    keys = get_task(task).headline
    parts = [f"{k} {format_metric(k, m[k])}" for k in keys if isinstance(m.get(k), (int, float))]
    return "test: " + ", ".join(parts)


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
