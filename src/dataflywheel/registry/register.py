"""Registering a trained model: run row, version row and bundle folder, all or nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dataflywheel.registry.bundle import write_bundle
from dataflywheel.store import Project
from dataflywheel.store.metadata import ModelVersionRow, RunRow


def register(
    project: Project,
    *,
    run_key: str,
    dataset_id: str,
    config: dict[str, Any],
    history: list[dict[str, Any]],
    lineage: dict[str, Any],
    model: Any,
    model_json: dict[str, Any],
    preprocessor: Any,
    schema: Any,
    metrics: dict[str, Any],
    verdict: dict[str, Any] | None,
    extra: Callable[[Path], None] | None = None,
) -> int:
    """Record the run and a new model version and write its bundle; return the version number.

    The bundle is written into a temporary folder inside the open transaction and renamed into
    place just before the commit; if anything fails, neither the rows nor the folder remain.
    """
    run_id = uuid.uuid4().hex
    with project.metadata.transaction() as s:
        s.add(RunRow(id=run_id, run_key=run_key, dataset_id=dataset_id, config=config, history=history,
                     lineage=lineage))
        s.flush()  # the run row must exist before the version row that references it
        row = ModelVersionRow(
            run_id=run_id,
            dataset_id=dataset_id,
            model_type=model_json["spec"]["type"],
            task=model_json["task"],
            metrics=metrics,
            artifact="",
            verdict=verdict,
        )
        s.add(row)
        s.flush()
        version = row.version
        key = f"models/v{version}"
        row.artifact = key
        full_lineage = {**lineage, "model_version": version, "run_id": run_id}
        try:
            with project.artifacts.write_dir(key) as tmp:
                if extra is not None:
                    extra(tmp)
                write_bundle(
                    tmp,
                    model=model,
                    model_json={**model_json, "version": version},
                    preprocessor=preprocessor,
                    schema=schema,
                    metrics=metrics,
                    lineage=full_lineage,
                )
        except BaseException:
            project.artifacts.remove(key)
            raise
    return version
