"""The full loop on breast cancer: v1 on a small slice, served predictions, labelled feedback,
retrain -> next dataset version -> challenger v2 -> gate verdict -> lineage; the retrain worker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sqlalchemy import func, select

from dataflywheel.config import FlywheelConfig, RetrainConfig
from dataflywheel.data.dataset import get_version
from dataflywheel.data.examples import load_example
from dataflywheel.feedback import worker
from dataflywheel.feedback.log import LogWriter, PredictionRecord, new_id
from dataflywheel.feedback.retrain import RetrainResult, retrain
from dataflywheel.feedback.trainingset import HOLDOUT, assign_role, holdout_frame, new_label_count
from dataflywheel.lineage_trace import trace_feedback, trace_prediction
from dataflywheel.loop import as_config, open_project, run
from dataflywheel.registry import versions
from dataflywheel.serve.model import load_served_model
from dataflywheel.serve.requests import check_label
from dataflywheel.store import Project
from dataflywheel.store.metadata import ModelVersionRow

from cli_helpers import flywheel
from store_helpers import roles

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "breast-cancer" / "flywheel.yaml"
N_INITIAL = 150


@dataclass
class Cycle:
    folder: Path
    cfg: FlywheelConfig
    project: Project
    before: RetrainResult
    result: RetrainResult
    prediction_ids: list[str]
    superseded: str
    duplicate: str
    parent_id: str


def serve_and_label(project: Project, rows: pl.DataFrame, labels: list[str]) -> tuple[list[str], list[str]]:
    """Predict ``rows`` with the champion as the server does, log them, send true labels back."""
    served = load_served_model(project, "champion", threads=1)
    records = rows.select(served.columns).to_dicts()
    outputs = served.forward(records)
    logged = [PredictionRecord(new_id(), o["model_version"], r, {"prediction": o["prediction"],
                                                                 "probabilities": o["probabilities"]}, 1.0)
              for r, o in zip(records, outputs, strict=True)]
    with LogWriter(project.metadata) as w:
        w.log_predictions(logged).result(30)
        futures = [w.record_feedback(p.id, y, check=check_label) for p, y in zip(logged, labels, strict=True)]
        feedback = [f.result(30).id for f in futures]
    return [p.id for p in logged], feedback


@pytest.fixture(scope="module")
def cycle(tmp_path_factory: pytest.TempPathFactory) -> Cycle:
    folder = tmp_path_factory.mktemp("loop")
    data = load_example("breast_cancer").sample(fraction=1.0, shuffle=True, seed=1)
    data[:N_INITIAL].write_csv(folder / "data.csv")
    text = EXAMPLE.read_text().replace("sklearn:breast_cancer", "data.csv").replace("epochs: 50", "epochs: 8")
    (folder / "flywheel.yaml").write_text(text)
    run(folder / "flywheel.yaml", progress=False)
    cfg = as_config(folder / "flywheel.yaml")
    project = open_project(cfg)
    before = retrain(cfg, project)

    rest = data[N_INITIAL:]
    labels = [str(v) for v in rest["target"].to_list()]
    ids, feedback = serve_and_label(project, rest, labels)
    # A second, later label for the first prediction supersedes its first one ...
    with LogWriter(project.metadata) as w:
        w.record_feedback(ids[0], labels[0], check=check_label).result(10)
    # ... and a served record identical to a row the parent dataset already holds is a duplicate.
    _, (duplicate,) = serve_and_label(project, data[:1], [str(data["target"][0])])
    parent_id = versions.resolve(project, "champion").dataset_id
    result = retrain(cfg, project)
    c = Cycle(folder, cfg, project, before, result, ids, feedback[0], duplicate, parent_id)
    yield c
    project.close()


def test_nothing_to_do_without_new_feedback(cycle: Cycle) -> None:
    assert cycle.before.status == "nothing_to_do" and "nothing to do" in cycle.before.message
    again = retrain(cycle.cfg, cycle.project)
    assert again.status == "nothing_to_do"
    assert [v.version for v in versions.list_versions(cycle.project)] == [1, 2]


def test_next_dataset_version_is_parent_plus_feedback(cycle: Cycle) -> None:
    r = cycle.result
    assert r.status == "trained" and r.parent_dataset == cycle.parent_id
    child, parent = get_version(cycle.project, r.dataset_id), get_version(cycle.project, cycle.parent_id)
    assert child.parents == [parent.id]
    by_role = roles(cycle.project, child.id)
    n_feedback = len(cycle.prediction_ids) + 2
    assert sum(len(v) for v in by_role.values()) == n_feedback
    assert by_role["dropped"] == {cycle.superseded, cycle.duplicate}
    assert_frame_equal(child.split("test"), parent.split("test"))  # frozen: same rows for both models
    for split in ("train", "valid"):
        assert child.split(split).height == parent.split(split).height + len(by_role[split])
    held = holdout_frame(child)
    assert held is not None and held.height == len(by_role[HOLDOUT])
    assert 0.1 < len(by_role[HOLDOUT]) / n_feedback < 0.3  # evaluate.feedback_holdout = 0.2
    for role in ("train", "valid", HOLDOUT):  # deterministic in the feedback id
        assert all(assign_role(f, 0.2, 0.15 / 0.85) == role for f in by_role[role])
    assert r.feedback == {"rejected": 0} | {k: len(v) for k, v in by_role.items()}


def test_gate_verdict_recorded_and_shown(cycle: Cycle) -> None:
    r = cycle.result
    with cycle.project.metadata.transaction() as s:
        verdict = s.get(ModelVersionRow, r.version).verdict
    assert verdict == r.verdict and verdict["decision"] in ("promoted", "rejected")
    assert verdict["champion_version"] == 1
    assert verdict["eval_rows"] == {"test": get_version(cycle.project, r.dataset_id).split("test").height,
                                    "feedback_holdout": r.feedback[HOLDOUT]}
    assert [c["metric"] for c in verdict["checks"]] == ["roc_auc", "accuracy", "f1", "log_loss"]
    assert all(c["challenger"] is not None and c["champion"] is not None for c in verdict["checks"])
    assert (verdict["decision"] == "promoted") == all(c["passed"] for c in verdict["checks"])
    alias = "champion" if verdict["decision"] == "promoted" else "challenger"
    assert versions.alias_version(cycle.project, alias) == r.version
    shown = flywheel("models", "show", str(r.version), cwd=cycle.folder)
    assert shown.code == 0, shown.err
    assert f"verdict: {verdict['decision']}" in shown.out and "guard log_loss" in shown.out
    assert [c["tolerance"] for c in verdict["checks"]] == [None, "absolute", "absolute", "relative"]
    assert "guard tolerance: accuracy absolute, f1 absolute, log_loss relative" in " ".join(shown.out.split())


def test_lineage_both_directions(cycle: Cycle) -> None:
    r = cycle.result
    by_role = roles(cycle.project, r.dataset_id)
    learned, held = sorted(by_role["train"])[0], sorted(by_role[HOLDOUT])[0]
    assert trace_feedback(cycle.project, learned)["first_model"]["version"] == r.version
    assert trace_feedback(cycle.project, held)["first_model"] is None
    with LogWriter(cycle.project.metadata) as w:
        pid = new_id()
        w.log_predictions([PredictionRecord(pid, r.version, {"x": 1.0}, {"prediction": "1"}, 1.0)]).result(10)
    doc = trace_prediction(cycle.project, pid)
    assert doc["model"]["version"] == r.version and doc["run"]["id"]
    assert doc["dataset"]["id"] == r.dataset_id
    assert doc["dataset"]["feedback"]["train"] == sorted(by_role["train"])
    assert [p["id"] for p in doc["dataset"]["parents"]] == [cycle.parent_id]
    cli = flywheel("lineage", "--feedback", learned, "--json", cwd=cycle.folder)
    if cli.code == 0:  # once the integrator has wired the command
        assert json.loads(cli.out)["first_model"]["version"] == r.version


def test_worker_triggers(cycle: Cycle, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = cycle.cfg.model_copy(deep=True)
    cfg.retrain = RetrainConfig(every_n_labels=2, drift_threshold=None, poll_seconds=0.1)
    assert new_label_count(cycle.project) == 0 and worker.trigger(cfg, cycle.project) is None
    # Slightly changed records: the originals are all in the dataset already (they would be dropped).
    data = load_example("breast_cancer")[200:202].with_columns(pl.col("mean radius") * 1.01)
    serve_and_label(cycle.project, data, [str(v) for v in data["target"].to_list()])
    assert new_label_count(cycle.project) == 2
    assert "2 new labelled feedback rows" in (worker.trigger(cfg, cycle.project) or "")
    cfg.retrain = RetrainConfig(every_n_labels=None, drift_threshold=0.2, poll_seconds=0.1)
    monkeypatch.setattr(worker, "drift_score", lambda *_a: 0.5)
    assert "drift: max PSI 0.500" in (worker.trigger(cfg, cycle.project) or "")
    monkeypatch.setattr(worker, "drift_score", lambda *_a: 0.1)
    assert worker.trigger(cfg, cycle.project) is None
    # The loop itself: one poll, one retrain, then nothing new.
    cfg.retrain = RetrainConfig(every_n_labels=2, poll_seconds=0.1)
    before = len(versions.list_versions(cycle.project))
    assert worker.run_worker(cfg, max_iterations=3, log=lambda _m: None) == 1
    assert len(versions.list_versions(cycle.project)) == before + 1 and new_label_count(cycle.project) == 0
    # Feedback on records the champion's data already holds adds nothing: no version is trained.
    # (promote the newest version whatever its verdict: its dataset holds every earlier feedback row)
    versions.promote(cycle.project, before + 1, reason="test")
    again = load_example("breast_cancer").sample(fraction=1.0, shuffle=True, seed=1)[1:3]
    serve_and_label(cycle.project, again, [str(v) for v in again["target"].to_list()])
    result = retrain(cfg, cycle.project)
    assert result.status == "no_usable_rows" and result.feedback["dropped"] == 2
    assert len(versions.list_versions(cycle.project)) == before + 1


def test_worker_process_stops_on_sigterm(cycle: Cycle, tmp_path: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    shutil.copy(cycle.folder / "flywheel.yaml", folder / "flywheel.yaml")
    with (folder / "flywheel.yaml").open("a") as fh:
        fh.write(f"store: {{root: {cycle.folder / '.flywheel'}}}\n"
                 "retrain: {every_n_labels: 100000, poll_seconds: 0.2}\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dataflywheel.feedback.worker", "--config",
                             str(folder / "flywheel.yaml"), "--max-seconds", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "polling every 0.2s" in first, first
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped after 0 retrain(s)" in out
    with cycle.project.metadata.transaction() as s:
        assert s.scalar(select(func.count()).select_from(ModelVersionRow)) >= 2
