"""Registering a trained model: run row, version row and bundle folder, all or nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dataflywheel.registry.bundle import ModelBundle, write_bundle
from dataflywheel.store import Project
from dataflywheel.store.metadata import ModelVersionRow, RunRow


@dataclass
class RunRecord:
    """What the registry records about the run that trained a bundle (the run and version rows,
    ``metrics.json`` and ``lineage.json``)."""

    run_key: str
    """The hash of everything that determines the model (:func:`~dataflywheel.loop.run_key`)."""
    dataset_id: str
    config: dict[str, Any]
    """The whole flywheel.yaml, resolved."""
    history: list[dict[str, Any]]
    """One log dict per epoch."""
    lineage: dict[str, Any]
    metrics: dict[str, Any]
    """Test metrics."""
    verdict: dict[str, Any] | None
    """The promotion gate's verdict."""


def register(project: Project, bundle: ModelBundle, run: RunRecord, *,
             extra: Callable[[Path], None] | None = None) -> int:
    """Record ``run`` and a new model version and write ``bundle`` (``extra`` adds files to its
    folder: the report); return the version number.

    The bundle is written into a temporary folder inside the open transaction and renamed into
    place just before the commit; if anything fails, neither the rows nor the folder remain.
    """
    run_id = uuid.uuid4().hex
    with project.metadata.transaction() as s:
        s.add(RunRow(id=run_id, run_key=run.run_key, dataset_id=run.dataset_id, config=run.config,
                     history=run.history, lineage=run.lineage))
        s.flush()  # the run row must exist before the version row that references it
        row = ModelVersionRow(
            run_id=run_id,
            dataset_id=run.dataset_id,
            model_type=bundle.spec["type"],
            task=bundle.task,
            metrics=run.metrics,
            artifact="",
            verdict=run.verdict,
        )
        s.add(row)
        s.flush()
        version = row.version
        key = f"models/v{version}"
        row.artifact = key
        full_lineage = {**run.lineage, "model_version": version, "run_id": run_id}
        try:
            with project.artifacts.write_dir(key) as tmp:
                if extra is not None:
                    extra(tmp)
                write_bundle(tmp, replace(bundle, version=version), metrics=run.metrics, lineage=full_lineage)
        except BaseException:
            project.artifacts.remove(key)
            raise
    return version
