"""The stages of ``flywheel run`` and ``flywheel retrain`` after the dataset version:
train -> evaluate -> gate -> register.

Each stage is a function from typed inputs to a typed output; :func:`~dataflywheel.loop.train_and_register`
composes them (and skips them all when an identical run is registered already). Every stage
receives the :class:`StageContext` of the run: the config, the project, the dataset version and
the run key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from dataflywheel.config import FlywheelConfig
from dataflywheel.data.dataset import DatasetVersion
from dataflywheel.registry.bundle import ModelBundle
from dataflywheel.store import Project

if TYPE_CHECKING:
    from dataflywheel.evaluate.stage import Evaluation, Verdict
    from dataflywheel.registry.predictor import Predictor
    from dataflywheel.train.stage import Trained

Log = Callable[[str], None]
MIN_TEST_ROWS = 20
"""Below this many test rows a run warns that its metrics (and the gate) mean little."""


@dataclass(frozen=True)
class StageContext:
    """What every stage of one run reads."""

    cfg: FlywheelConfig
    project: Project
    dataset: DatasetVersion
    run_key: str
    """:func:`~dataflywheel.loop.run_key` of the dataset and the config."""
    log: Log


@dataclass
class Evaluated:
    """The evaluation stage's output: the challenger with its threshold, scored."""

    bundle: ModelBundle
    """The trained bundle with the threshold chosen on the validation split: what is registered."""
    predictor: Predictor
    """Wraps :attr:`bundle`."""
    test: pl.DataFrame
    evaluation: Evaluation
    """On the test split: the metrics that are registered and reported."""
    gate_rows: pl.DataFrame
    """The rows the gate scores both models on: the test split plus held-out feedback."""
    eval_rows: dict[str, int]
    """How many of the gate rows are ``test`` and ``feedback_holdout``."""
    gate_metrics: dict[str, Any]
    """The challenger's metrics on the gate rows."""
    pairs: pl.DataFrame | None = None
    """Generation models: the held-out preference pairs the gate also scores both models on."""

    @property
    def metrics(self) -> dict[str, Any]:
        return self.evaluation.metrics


@dataclass
class Gated:
    """The gate stage's output."""

    verdict: Verdict
    champion_version: int | None
    """The champion the challenger was compared with (None: there was none)."""


@dataclass
class Registered:
    """The register stage's output."""

    version: int
    report: Path
    champion: int | None
    """The champion after the aliases moved."""


def train_stage(ctx: StageContext, *, resume: bool = False, progress: bool = True) -> Trained:
    """Fit the encoders and train the model by ``train.method``
    (:func:`~dataflywheel.train.methods.train_with_method`), checkpointing under the run key."""
    from dataflywheel.train.methods import train_with_method

    ckpt = ctx.project.root / "checkpoints" / ctx.run_key[:16]
    trained = train_with_method(ctx.cfg, ctx.project, ctx.dataset, ctx.run_key, checkpoint_dir=ckpt, resume=resume,
                                progress=progress, log=ctx.log)
    ctx.log(trained.history.summary())
    if pref := trained.preference:
        accuracy, loss = pref.get("val_reward_accuracy"), pref.get("loss", float("nan"))
        checked = (f", validation reward accuracy {accuracy:.3f} on {pref['valid_pairs']} pairs"
                   if accuracy is not None else "")
        ctx.log(f"DPO on {pref['pairs']} preference pairs (beta {pref['beta']}): loss {loss:.4f}{checked}")
    if throughput := trained.history.throughput():
        ctx.log(f"training: {throughput['tokens_per_s']:.0f} tokens/s, "
                f"peak memory {throughput['peak_memory_mb']:.0f} MB")
    return trained


def evaluate_stage(ctx: StageContext, trained: Trained) -> Evaluated:
    """Choose the threshold on the validation split, score the test split and the gate rows."""
    from dataflywheel.evaluate.stage import choose_threshold, evaluate_split
    from dataflywheel.feedback.completion_set import held_out_pairs
    from dataflywheel.feedback.trainingset import evaluation_rows
    from dataflywheel.registry.predictor import Predictor

    target, dataset, log = ctx.cfg.data.target, ctx.dataset, ctx.log
    threshold = choose_threshold(Predictor(trained.bundle), dataset.split("valid"), target)
    bundle = replace(trained.bundle, threshold=threshold)
    predictor = Predictor(bundle)
    test = dataset.split("test")
    if test.height < MIN_TEST_ROWS:
        log(f"warning: the test split has {test.height} rows; its metrics are noise and the promotion "
            f"decision with them (add data or raise data.split.test)")
    evaluation = evaluate_split(predictor, test, target, ctx.cfg.evaluate)
    gate_rows, eval_rows = evaluation_rows(dataset, test)
    pairs = held_out_pairs(dataset)
    if pairs is not None:
        eval_rows["preference_pairs"] = pairs.height
    gate_metrics = (evaluation.metrics if gate_rows is test and pairs is None
                    else evaluate_split(predictor, gate_rows, target, ctx.cfg.evaluate, pairs=pairs).metrics)
    for column, count in trained.truncated.items():
        log(f"text column {column!r}: {count} train text(s) truncated to max_length")
    for column, count in trained.rejected.items():
        log(f"text column {column!r}: {count} train row(s) longer than max_length left out of the loss "
            "(truncate: reject)")
    log(metrics_line(predictor.task, evaluation.metrics))
    return Evaluated(bundle, predictor, test, evaluation, gate_rows, eval_rows, gate_metrics, pairs)


def gate_stage(ctx: StageContext, evaluated: Evaluated) -> Gated:
    """Score the champion (if any) on the gate rows and apply the promotion gate."""
    from dataflywheel import registry
    from dataflywheel.evaluate.stage import compare_to_champion
    from dataflywheel.registry import versions

    champion_version = versions.alias_version(ctx.project, versions.CHAMPION)
    champion = base = None
    if champion_version is not None:
        champion = registry.load(ctx.project, champion_version, base_dir=ctx.cfg.base_dir).predictor
    elif ctx.cfg.evaluate.compare_base:
        from dataflywheel.evaluate.baseline import base_predictor

        base = base_predictor(evaluated.predictor, [ctx.cfg.base_dir])
        if base is not None:
            ctx.log("scoring the base model on the same rows, for comparison (evaluate.compare_base)")
    verdict = compare_to_champion(ctx.cfg, evaluated.predictor.task, evaluated.gate_metrics, champion,
                                  champion_version, evaluated.gate_rows, eval_rows=evaluated.eval_rows,
                                  pairs=evaluated.pairs, challenger=evaluated.predictor, base=base)
    return Gated(verdict, champion_version)


def register_stage(ctx: StageContext, trained: Trained, evaluated: Evaluated, gated: Gated, *,
                   actor: str = "flywheel run") -> Registered:
    """Register the bundle with its report and lineage, then move ``champion`` (first model or
    promoted) or ``challenger`` (rejected)."""
    from dataflywheel.registry import versions
    from dataflywheel.registry.register import RunRecord, register

    cfg, project, dataset = ctx.cfg, ctx.project, ctx.dataset
    verdict = gated.verdict
    lineage = run_lineage(ctx, trained)
    epochs = list(trained.history.epochs)

    def write_report(folder: Path) -> None:
        from dataflywheel.evaluate.report import render_report

        predictor = evaluated.predictor
        render_report(
            folder / "report.html",
            title=f"{cfg.project}: {cfg.model.type} on dataset {dataset.id}",
            task=predictor.task,
            metrics=evaluated.metrics,
            history=epochs,
            y_true=evaluated.evaluation.y_true,
            scores=evaluated.evaluation.scores,
            class_names=predictor.class_names,
            lineage={**lineage, "verdict": verdict.decision, "verdict reasons": "; ".join(verdict.reasons)},
            sections=[explanations_section(predictor, evaluated.test)],
            champion_answers=verdict.champion_answers, champion_version=verdict.champion_version,
            differences=verdict.differences, base_metrics=verdict.base_metrics, intervals=verdict.intervals,
        )

    record = RunRecord(run_key=ctx.run_key, dataset_id=dataset.id, config=cfg.model_dump(mode="json"),
                       history=epochs, lineage=lineage, metrics=evaluated.metrics, verdict=verdict.to_dict())
    version = register(project, evaluated.bundle, record, extra=write_report)
    reason = "; ".join(verdict.reasons)
    if verdict.decision in ("champion", "promoted"):
        versions.promote(project, version, reason=f"{actor}: {reason}")
    else:
        versions.set_alias(project, versions.CHALLENGER, version, action="challenger", reason=reason)
    ctx.log(f"model v{version} registered: {verdict.decision} ({reason})")
    report = project.artifacts.path(f"models/v{version}") / "report.html"
    return Registered(version, report, versions.alias_version(project, versions.CHAMPION))


def run_lineage(ctx: StageContext, trained: Trained) -> dict[str, Any]:
    """Where a model came from: the dataset, the config, the run, the machine."""
    from dataflywheel.lineage import environment

    history = trained.history
    return {
        "dataset_id": ctx.dataset.id,
        "dataset_parents": ctx.dataset.parents,
        "config_hash": ctx.cfg.section_hash("data", "model", "train", "evaluate"),
        "run_key": ctx.run_key,
        "seed": ctx.cfg.train.seed,
        "threads": history.threads,
        "device": history.device,
        "n_params": trained.n_params,
        "resumed_from_epoch": history.resumed_from,
        "truncated_texts": trained.truncated,
        **({"rejected_texts": trained.rejected} if trained.rejected else {}),
        "train_method": trained.method,
        **({"dpo": trained.preference} if trained.preference else {}),
        **history.throughput(),
        **environment(),
    }


def explanations_section(predictor: Predictor, test: pl.DataFrame, n: int = 3) -> tuple[str, str]:
    """A few test rows explained (Integrated Gradients) for the report; never fails the run."""
    from dataflywheel.explain import report_section

    if not predictor.task_object.explainable:
        return ("Explanations", f"<p>not available for a {predictor.task} model</p>")
    try:
        return report_section(predictor, test, n=n)
    except Exception as exc:  # noqa: BLE001 (an explanation is a nicety; the model is already trained)
        return ("Explanations", f"<p>not available: {type(exc).__name__}: {exc}</p>")


def metrics_line(task: str, m: dict[str, Any]) -> str:
    """``test: <headline metric> <value>, ...`` for the task's headline metrics."""
    from dataflywheel.evaluate.metrics import format_metric
    from dataflywheel.tasks import get_task

    keys = get_task(task).headline
    parts = [f"{k} {format_metric(k, m[k])}" for k in keys if isinstance(m.get(k), (int, float))]
    return "test: " + ", ".join(parts)
