"""Which labelled feedback a retrain takes, and when it counts as used: rows are checked against
the columns the model reads (a text column an MLP skips is not required), rows the model cannot
use are rejected (an error when nothing is left to train) and stay pending, and the dataset
version of a retrain that did not finish strands no label."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from dataflywheel.config import RetrainConfig
from dataflywheel.data.dataset import get_version
from dataflywheel.feedback import worker
from dataflywheel.feedback.log import LogWriter, PredictionRecord, new_id
from dataflywheel.feedback.retrain import retrain
from dataflywheel.feedback.trainingset import build_next_version, new_label_count, pending_feedback
from dataflywheel.loop import as_config, open_project, run
from dataflywheel.registry import versions
from dataflywheel.serve.model import load_served_model
from dataflywheel.serve.requests import check_label
from dataflywheel.store import Project

from cli_helpers import flywheel
from store_helpers import roles

CONFIG = """\
project: churn
data:
  source: data.csv
  target: churn
  split: {train: 0.7, valid: 0.15, test: 0.15, seed: 0}
model: {type: mlp, params: {hidden: [8]}}
train: {epochs: 2, batch_size: 32, seed: 0}
"""


def churn(n: int, seed: int, gaps: bool = True) -> pl.DataFrame:
    """Numbers, a category, a free-text ``notes`` column (with ``gaps``, sometimes empty) and a
    0/1 target."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=n), rng.normal(size=n)
    plan = rng.choice(["basic", "plus", "pro"], size=n)
    notes = [None if gaps and i % 4 == 0 else f"customer wrote about plan {rng.integers(0, 99)} and called back"
             for i in range(n)]
    target = ((x + y + (plan == "pro")) > 0.5).astype(int)
    return pl.DataFrame({"x": x, "y": y, "plan": plan, "notes": notes, "churn": target})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("churn")
    churn(240, seed=0).write_csv(folder / "data.csv")
    (folder / "flywheel.yaml").write_text(CONFIG)
    assert run(folder / "flywheel.yaml", progress=False).version == 1
    return folder


@pytest.fixture
def folder(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained project (v1 champion, no feedback) for one test to change."""
    copy = tmp_path / "p"
    shutil.copytree(trained, copy)
    return copy


@pytest.fixture
def project(folder: Path) -> Iterator[Project]:
    p = open_project(as_config(folder / "flywheel.yaml"))
    yield p
    p.close()


def serve_and_label(project: Project, rows: pl.DataFrame, *, log_all: bool = False) -> list[str]:
    """Predict ``rows`` as the server does (only the columns the served model reads are sent and
    logged; with ``log_all`` every column is logged), then label every prediction; the feedback ids."""
    served = load_served_model(project, "champion", threads=1)
    records = rows.select(served.columns).to_dicts()
    logged = rows.drop("churn").to_dicts() if log_all else records
    return label(project, logged, served.forward(records), rows["churn"].to_list())


def label(project: Project, records: list[dict[str, Any]], outputs: list[dict[str, Any]], labels: list[Any]
          ) -> list[str]:
    logged = [PredictionRecord(new_id(), 1, r, {"prediction": o["prediction"], "probabilities": o["probabilities"]},
                               1.0) for r, o in zip(records, outputs, strict=True)]
    with LogWriter(project.metadata) as w:
        w.log_predictions(logged).result(30)
        futures = [w.record_feedback(p.id, str(y), check=check_label) for p, y in zip(logged, labels, strict=True)]
        return [f.result(30).id for f in futures]


def test_feedback_without_a_column_the_model_does_not_read_is_trained_on(folder: Path, project: Project) -> None:
    served = load_served_model(project, "champion", threads=1)
    assert "notes" not in served.columns  # the MLP skips the text column; the server neither takes nor logs it
    ids = serve_and_label(project, churn(60, seed=1))
    result = retrain(as_config(folder / "flywheel.yaml"), project)
    assert result.status == "trained", result.message
    by_role = roles(project, result.dataset_id or "")
    assert set().union(*by_role.values()) == set(ids) and "rejected" not in by_role
    assert sum(len(by_role.get(r, ())) for r in ("train", "valid", "holdout")) == 60
    assert versions.resolve(project, result.version or 0).dataset_id == result.dataset_id
    dataset = get_version(project, result.dataset_id or "")
    added = dataset.split("train").tail(len(by_role["train"]))
    assert added["notes"].null_count() == added.height  # not read, not logged: left empty, not a reason to drop
    assert added["plan"].null_count() == 0
    assert new_label_count(project) == 0


def test_rows_the_model_cannot_use_are_rejected_kept_pending_and_the_command_fails(
        folder: Path, project: Project) -> None:
    config = folder / "flywheel.yaml"
    config.write_text(CONFIG.replace("  split:", "  processing: {missing: {number: drop}}\n  split:"))
    served = load_served_model(project, "champion", threads=1)
    records = [{"x": None, "y": 0.5, "plan": "basic"}, {"x": None, "y": -1.0, "plan": "pro"}]
    logged = [r | {"notes": "a note"} for r in records]  # a column the model ignores, logged all the same
    bad = label(project, logged, served.forward(records), [0, 1])
    r = flywheel("retrain", cwd=folder)
    assert r.code != 0 and "Traceback" not in r.err
    assert "nothing to train: 2 new labelled feedback rows were rejected" in r.err
    assert "input 'x' missing (data.processing.missing.number: drop)" in r.err
    # seen, not held: the trigger does not fire on them again, the next retrain tries them again
    assert new_label_count(project) == 0
    trace = flywheel("lineage", "--feedback", bad[0], cwd=folder)
    assert trace.code == 0 and "as rejected" in trace.out and "the next retrain tries it again" in trace.out
    parent = versions.resolve(project, "champion").dataset_id
    assert set(pending_feedback(project, parent)["feedback_id"]) == set(bad)
    again = flywheel("retrain", cwd=folder)
    assert again.code != 0 and "2 new labelled feedback rows were rejected" in again.err
    good = serve_and_label(project, churn(30, seed=2))
    result = retrain(as_config(config), project)
    assert result.status == "trained" and result.feedback["rejected"] == 2
    by_role = roles(project, result.dataset_id or "")
    assert by_role["rejected"] == set(bad) and set().union(*by_role.values()) == {*bad, *good}


def test_the_dataset_version_of_an_unfinished_retrain_strands_no_label(folder: Path, project: Project) -> None:
    """What a retrain killed while training leaves: the next dataset version and its feedback
    links, no model. The trigger still counts the labels; the next retrain removes the orphan
    and trains on them."""
    cfg = as_config(folder / "flywheel.yaml")
    ids = serve_and_label(project, churn(40, seed=3, gaps=False), log_all=True)
    parent = versions.resolve(project, "champion").dataset_id
    orphan = build_next_version(cfg, project, get_version(project, parent))
    assert orphan is not None and not orphan.dataset.reused
    assert new_label_count(project) == 40
    cfg.retrain = RetrainConfig(every_n_labels=40, poll_seconds=0.1)
    assert "40 new labelled feedback rows" in (worker.trigger(cfg, project) or "")
    logs: list[str] = []
    result = retrain(cfg, project, log=logs.append)
    assert result.status == "trained", result.message
    assert any(f"dataset {orphan.dataset.id}" in m and "removed" in m for m in logs)
    assert set().union(*roles(project, result.dataset_id or "").values()) == set(ids)
    assert new_label_count(project) == 0 and worker.trigger(cfg, project) is None
    assert result.dataset_id == orphan.dataset.id  # the same content, built again
    again = retrain(cfg, project)
    assert again.status in ("nothing_to_do", "already_trained")


@pytest.mark.slow
def test_kill_9_during_retrain_then_retrain_trains_on_the_labels(folder: Path, project: Project) -> None:
    config = folder / "flywheel.yaml"
    config.write_text(CONFIG.replace("train: {epochs: 2,", "train: {epochs: 100000, early_stopping: null,"))
    ids = serve_and_label(project, churn(40, seed=4, gaps=False), log_all=True)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "flywheel"), "retrain", "--config", str(config)],
                            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        deadline = time.monotonic() + 60
        while not linked(folder):  # the dataset version is written: training has started
            assert proc.poll() is None, (proc.stderr.read() if proc.stderr else b"").decode()[-2000:]
            assert time.monotonic() < deadline, "the retrain never wrote its dataset version"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert [v.version for v in versions.list_versions(project)] == [1]
    assert new_label_count(project) == 40
    config.write_text(CONFIG)
    result = retrain(as_config(config), project)
    assert result.status == "trained"
    assert set().union(*roles(project, result.dataset_id or "").values()) == set(ids)


def linked(folder: Path) -> bool:
    con = sqlite3.connect(folder / ".flywheel" / "flywheel.db", timeout=30)
    try:
        return bool(con.execute("SELECT count(*) FROM dataset_feedback").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not there yet
        return False
    finally:
        con.close()
