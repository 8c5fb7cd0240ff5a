"""The metadata store migrates itself: a new store is created at head, a store made before
migrations (tests/fixtures/store-v0, see make_store_v0.py) is stamped and upgraded in place,
and two processes opening a new store at once both succeed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text

from dataflywheel import registry
from dataflywheel.feedback.log import FeedbackRow, PredictionRow
from dataflywheel.feedback.retrain import retrain
from dataflywheel.loop import as_config, open_project
from dataflywheel.registry import versions
from dataflywheel.store import Project
from dataflywheel.store.migrate import HEAD, VERSION_TABLE, head, revision, target_metadata

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "store-v0"
SRC = Path(__file__).resolve().parents[1] / "src"


def _revision(project: Project) -> str | None:
    with project.metadata.engine.connect() as conn:
        return revision(conn)


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    folder = tmp_path / "store-v0"
    shutil.copytree(FIXTURE, folder)
    return folder


def test_a_new_store_is_created_at_head_with_the_mapped_schema(tmp_path: Path) -> None:
    project = Project.open(tmp_path / "new")
    try:
        assert _revision(project) == head() == HEAD
        with project.metadata.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), target_metadata())
        assert diff == []  # a model change without its migration shows up here
    finally:
        project.close()


def test_a_store_made_before_migrations_upgrades_in_place(old_store: Path) -> None:
    db = old_store / "store" / "flywheel.db"
    import sqlite3

    with sqlite3.connect(db) as raw:
        tables = {r[0] for r in raw.execute("select name from sqlite_master where type='table'")}
    assert VERSION_TABLE not in tables and {"datasets", "predictions", "feedback"} <= tables

    cfg = as_config(old_store / "flywheel.yaml")
    project = open_project(cfg)
    try:
        assert _revision(project) == head()
        [v1] = versions.list_versions(project)
        assert v1.version == 1 and v1.aliases == ["champion"] and "roc_auc" in v1.metrics
        loaded = registry.load(project, "champion", base_dir=cfg.base_dir)
        assert loaded.info is not None and loaded.info.version == 1
        with project.metadata.transaction() as s:
            predictions = s.scalars(select(PredictionRow)).all()
            labels = s.scalars(select(FeedbackRow)).all()
        assert len(predictions) == 6 and len(labels) == 4
        assert {p.model_version for p in predictions} == {1}
        assert all(f.value["label"] in {"0", "1"} for f in labels)
        assert all(p.output["prediction"] in {"0", "1"} for p in predictions)

        result = retrain(cfg, project)
        assert result.status != "failed" and result.version == 2, result.message
        assert result.feedback.get("train", 0) + result.feedback.get("valid", 0) \
            + result.feedback.get("holdout", 0) == 4
        assert [v.version for v in versions.list_versions(project)] == [1, 2]
    finally:
        project.close()


def test_an_old_store_without_log_tables_is_stamped_and_completed(old_store: Path) -> None:
    import sqlite3

    db = old_store / "store" / "flywheel.db"
    with sqlite3.connect(db) as raw:  # a store that never served: no log tables yet
        raw.execute("drop table feedback")
        raw.execute("drop table predictions")
    project = Project.open(old_store / "store")
    try:
        assert _revision(project) == head()
        with project.metadata.engine.connect() as conn:
            assert {"predictions", "feedback"} <= set(inspect(conn).get_table_names())
            stamped = conn.execute(text(f"select version_num from {VERSION_TABLE}")).scalars().all()
            count = conn.execute(select(func.count()).select_from(PredictionRow.__table__)).scalar()
        assert stamped == [head()] and count == 0
        assert versions.resolve(project, "champion").version == 1
    finally:
        project.close()



def test_every_revision_downgrades_and_upgrades_again(tmp_path: Path) -> None:
    from alembic import command

    from dataflywheel.store.migrate import BASELINE, _config

    project = Project.open(tmp_path / "store")
    try:
        with project.metadata.engine.begin() as conn:
            command.downgrade(_config(conn), BASELINE)
            assert revision(conn) == BASELINE
            assert "events" in inspect(conn).get_table_names()  # 0002 drops the unused events table
            command.upgrade(_config(conn), "head")
            assert revision(conn) == head()
            assert "events" not in inspect(conn).get_table_names()
            assert compare_metadata(MigrationContext.configure(conn), target_metadata()) == []
    finally:
        project.close()


OPEN_AT = """
import sys, time
from pathlib import Path
from dataflywheel.store import Project
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
p = Project.open(Path(sys.argv[1]))
with p.metadata.engine.connect() as conn:
    from dataflywheel.store.migrate import revision
    print(revision(conn))
p.close()
"""


@pytest.mark.parametrize("n", [4])
def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path: Path, n: int) -> None:
    root = tmp_path / "fresh"
    start = time.time() + 4.0  # every process has imported by then and opens at the same moment
    env = {"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT, str(root), str(start)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == head()
