"""``registry.load``: a version number, ``vN``, an alias or a bundle folder to a loaded predictor."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from dataflywheel import registry
from dataflywheel.api import load_model
from dataflywheel.errors import NotFoundError
from dataflywheel.store import Project

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "store-v0"


@pytest.fixture
def project(tmp_path: Path) -> Project:
    shutil.copytree(FIXTURE, tmp_path / "p")
    p = Project.open(tmp_path / "p" / "store")
    yield p
    p.close()


@pytest.mark.parametrize("ref", [1, "1", "v1", "champion"])
def test_a_version_or_alias_loads_with_its_info(project: Project, ref: str | int) -> None:
    loaded = registry.load(project, ref)
    assert loaded.info is not None and loaded.info.version == 1 and "champion" in loaded.info.aliases
    assert loaded.predictor.version == 1
    assert loaded.predictor.folder == project.artifacts.path(loaded.info.artifact)


def test_a_bundle_folder_loads_without_a_project(project: Project) -> None:
    folder = project.artifacts.path(registry.load(project, 1).info.artifact)
    loaded = registry.load(None, folder)
    assert loaded.info is None and loaded.predictor.version == 1


def test_unknown_references_keep_their_messages(project: Project) -> None:
    with pytest.raises(NotFoundError, match="no model version v7"):
        registry.load(project, "v7")
    with pytest.raises(NotFoundError, match="no model has the alias 'staging'"):
        registry.load(project, "staging")


def test_an_alias_to_a_missing_version_is_not_found(tmp_path: Path) -> None:
    """A store written without foreign keys enforced can hold an alias to no version."""
    shutil.copytree(FIXTURE, tmp_path / "p")
    with sqlite3.connect(tmp_path / "p" / "store" / "flywheel.db") as db:
        db.execute("INSERT INTO aliases (name, version, updated_at) VALUES ('stale', 7, '2026-01-01 00:00:00')")
    project = Project.open(tmp_path / "p" / "store")
    try:
        with pytest.raises(NotFoundError, match="names model version 7, not in the store"):
            registry.load(project, "stale")
    finally:
        project.close()


def test_the_api_loads_through_the_registry(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path / "p")
    predictor = load_model("v1", tmp_path / "p" / "flywheel.yaml")
    assert predictor.version == 1 and predictor.threshold == pytest.approx(predictor.meta["threshold"])
