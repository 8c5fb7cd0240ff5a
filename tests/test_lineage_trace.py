"""Lineage in both directions over a hand-built store: prediction -> model -> run -> datasets, and
feedback -> the first model version that learned from it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dataflywheel.cli.loop_commands import UsageError, lineage
from dataflywheel.errors import NotFoundError
from dataflywheel.feedback.log import FeedbackRow, PredictionRow
from dataflywheel.lineage_trace import trace_feedback, trace_prediction
from dataflywheel.store import Project
from dataflywheel.store.metadata import DatasetFeedbackRow, DatasetParentRow, DatasetRow, ModelVersionRow, RunRow

OUT = {"prediction": "1", "probabilities": {"0": 0.3, "1": 0.7}}


def dataset(id_: str) -> DatasetRow:
    return DatasetRow(id=id_, source=f"src {id_}", source_fingerprint="f", config_hash="c", target="y", n_rows=10,
                      split_sizes={"train": 7, "valid": 2, "test": 1}, report={}, artifact=f"datasets/{id_}")


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    """d1 <- d2 (feedback A train, B holdout) <- d3 (feedback C valid); v1 on d1, v2 on d3;
    prediction p1 by v1 (feedback A, B, C on it), p2 by v2, p3 unlogged model; D in no dataset."""
    p = Project.open(tmp_path / ".flywheel")
    with p.metadata.transaction() as s:
        s.add_all([dataset("d1"), dataset("d2"), dataset("d3")])
        s.flush()
        s.add_all([DatasetParentRow(child_id="d2", parent_id="d1"), DatasetParentRow(child_id="d3", parent_id="d2")])
        s.add_all([RunRow(id=f"r{i}", run_key=f"k{i}", dataset_id=d, config={}, history=[{}] * 3,
                          lineage={"seed": 0, "code_version": "0.1.0", "config_hash": "abc"})
                   for i, d in ((1, "d1"), (2, "d3"))])
        s.flush()
        s.add_all([ModelVersionRow(version=i, run_id=f"r{i}", dataset_id=d, model_type="mlp", task="binary",
                                   metrics={}, artifact=f"models/v{i}", verdict={"decision": v, "reasons": [v]})
                   for i, d, v in ((1, "d1", "champion"), (2, "d3", "promoted"))])
        s.add_all([PredictionRow(id="p1", model_version=1, input={"x": 1.0}, output=OUT, latency_ms=1.0),
                   PredictionRow(id="p2", model_version=2, input={"x": 2.0}, output=OUT, latency_ms=1.0),
                   PredictionRow(id="p3", model_version=None, input={"x": 3.0}, output=OUT, latency_ms=1.0)])
        s.flush()
        s.add_all([FeedbackRow(id=f, prediction_id="p1", kind="label", value={"label": "1"}) for f in "ABCD"])
        s.add_all([DatasetFeedbackRow(dataset_id="d2", feedback_id="A", role="train"),
                   DatasetFeedbackRow(dataset_id="d2", feedback_id="B", role="holdout"),
                   DatasetFeedbackRow(dataset_id="d3", feedback_id="C", role="valid")])
    yield p
    p.close()


def test_prediction_to_model_run_and_dataset_ancestry(project: Project) -> None:
    doc = trace_prediction(project, "p2")
    assert doc["prediction"]["model_version"] == 2 and doc["model"]["version"] == 2
    assert doc["model"]["verdict"] == "promoted"
    assert doc["run"]["id"] == "r2" and doc["run"]["epochs"] == 3
    d3 = doc["dataset"]
    assert d3["id"] == "d3" and d3["feedback"] == {"valid": ["C"]}
    d2 = d3["parents"][0]
    assert d2["id"] == "d2" and d2["feedback"] == {"holdout": ["B"], "train": ["A"]}
    assert [p["id"] for p in d2["parents"]] == ["d1"] and d2["parents"][0]["parents"] == []
    json.dumps(doc)  # JSON-safe


def test_prediction_feedback_and_unknown_model(project: Project) -> None:
    assert {f["id"] for f in trace_prediction(project, "p1")["feedback"]} == set("ABCD")
    doc = trace_prediction(project, "p3")
    assert doc["model"] is None and doc["dataset"] is None
    with pytest.raises(NotFoundError, match="no prediction 'nope'"):
        trace_prediction(project, "nope")


def test_feedback_to_first_model_that_learned_it(project: Project) -> None:
    a = trace_feedback(project, "A")
    assert a["datasets"] == [{"id": "d2", "role": "train"}]
    assert a["first_model"]["version"] == 2  # d2 has no model; its child d3 does
    assert trace_feedback(project, "C")["first_model"]["version"] == 2
    assert trace_feedback(project, "B")["first_model"] is None  # held out: evaluated, never learned
    d = trace_feedback(project, "D")
    assert d["datasets"] == [] and d["first_model"] is None and d["prediction"]["id"] == "p1"
    with pytest.raises(NotFoundError, match="no feedback"):
        trace_feedback(project, "Z")


def test_cli(project: Project, tmp_path: Path) -> None:
    cfg = tmp_path / "flywheel.yaml"
    cfg.write_text("data: {source: data.csv, target: y}\n")
    app = typer.Typer()
    app.command("lineage")(lineage)
    app.command("noop")(lambda: None)  # keep lineage a named subcommand
    runner = CliRunner()
    r = runner.invoke(app, ["lineage", "p2", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "-> model v2" in r.output and "-> dataset d3" in r.output and "  -> dataset d2" in r.output
    r = runner.invoke(app, ["lineage", "--feedback", "A", "--config", str(cfg)])
    assert "first model that learned from it: v2" in r.output
    r = runner.invoke(app, ["lineage", "--feedback", "A", "--json", "--config", str(cfg)])
    assert json.loads(r.output)["first_model"]["version"] == 2
    r = runner.invoke(app, ["lineage", "p2", "--feedback", "A", "--config", str(cfg)])
    assert isinstance(r.exception, UsageError)
