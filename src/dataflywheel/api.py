"""The Python API: the same operations as the CLI, for notebooks and scripts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dataflywheel.config import FlywheelConfig, load_config
from dataflywheel.loop import RunResult, as_config, open_project
from dataflywheel.loop import run as _run

if TYPE_CHECKING:
    from dataflywheel.data.dataset import DatasetVersion
    from dataflywheel.registry.predictor import Predictor

__all__ = ["ingest", "load_config", "load_model", "run", "train", "validate_batch"]


def run(config: str | Path | FlywheelConfig = "flywheel.yaml", *, progress: bool = False, log: Any = None) -> RunResult:
    """Every stage, from the source to a registered model (``flywheel run``)."""
    return _run(config, progress=progress, log=log or (lambda _m: None))


def train(config: str | Path | FlywheelConfig = "flywheel.yaml", *, resume: bool = False, force: bool = False,
          progress: bool = False, log: Any = None) -> RunResult:
    """Train on the (re-used) dataset version; ``resume`` continues from the last checkpoint."""
    from dataflywheel.data.dataset import ingest as _ingest
    from dataflywheel.loop import as_training_config, train_and_register

    cfg = as_training_config(config)
    project = open_project(cfg)
    log = log or (lambda _m: None)
    try:
        dataset = _ingest(cfg, project, log=log)
        return train_and_register(cfg, project, dataset, resume=resume, progress=progress, log=log,
                                  force=force or resume)
    finally:
        project.close()


def ingest(config: str | Path | FlywheelConfig = "flywheel.yaml", *, log: Any = None) -> DatasetVersion:
    """The data stages alone (``flywheel data ingest``); returns the DatasetVersion."""
    from dataflywheel.data.dataset import ingest as _ingest

    cfg = as_config(config)
    project = open_project(cfg)
    try:
        return _ingest(cfg, project, log=log or (lambda _m: None))
    finally:
        project.close()


def load_model(ref: str | int = "champion", config: str | Path | FlywheelConfig = "flywheel.yaml") -> Predictor:
    """A :class:`~dataflywheel.registry.predictor.Predictor` for a version number, alias or bundle folder."""
    from dataflywheel import registry
    from dataflywheel.registry.loader import is_bundle_ref

    if is_bundle_ref(ref):
        predictor: Predictor = registry.load(None, ref).predictor
        return predictor
    cfg = as_config(config)
    project = open_project(cfg)
    try:
        predictor = registry.load(project, ref, base_dir=cfg.base_dir).predictor
        return predictor
    finally:
        project.close()


def validate_batch(path: str | Path, config: str | Path | FlywheelConfig = "flywheel.yaml",
                   dataset: str = "latest", *, require_target: bool = False) -> Any:
    """Check a new batch of data against a dataset version's schema (``flywheel data validate``).

    The target column may be absent (a batch to be scored) unless ``require_target``; the
    columns the version excluded (``data.exclude``) are expected, not extra; a category value
    is unseen when the version's train split, which the model learned from, lacks it."""
    from dataflywheel.data.anomalies import train_categories
    from dataflywheel.data.anomalies import validate_batch as _validate
    from dataflywheel.data.dataset import get_version
    from dataflywheel.data.sources import source_from_path

    cfg = as_config(config)
    project = open_project(cfg)
    try:
        version = get_version(project, dataset)
        schema = version.schema()
    finally:
        project.close()
    expected = [*version.report.get("excluded", []), *cfg.data.exclude]
    batch = source_from_path(path).read()
    categorical = [c.name for c in schema.features if c.type in ("category", "binary")]
    known = train_categories(version.train_columns(categorical), schema)
    return _validate(batch, schema, cfg.validation, require_target=require_target, expected=expected,
                     categories=known)
