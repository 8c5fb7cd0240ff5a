"""`flywheel feedback import`: labels by prediction id or by record, idempotent, all-or-nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from dataflywheel.cli.loop_commands import feedback_app
from dataflywheel.errors import DataError, NotFoundError
from dataflywheel.feedback.importer import import_feedback
from dataflywheel.feedback.log import FeedbackRow, LogWriter, PredictionRecord, new_id
from dataflywheel.store import Project

OUTPUT = {"prediction": "1", "probabilities": {"0": 0.2, "1": 0.8}}


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = Project.open(tmp_path / ".flywheel")
    yield p
    p.close()


@pytest.fixture
def predictions(project: Project) -> list[PredictionRecord]:
    records = [PredictionRecord(new_id(), 1, {"x": float(i), "color": "red" if i % 2 else "blue"}, OUTPUT, 1.0)
               for i in range(5)]
    with LogWriter(project.metadata) as w:
        w.log_predictions(records).result(10)
    return records


def labels(project: Project) -> dict[str, str]:
    with project.metadata.transaction() as s:
        return {f.prediction_id: f.value["label"] for f in s.scalars(select(FeedbackRow))}


def test_import_by_prediction_id_and_again(project: Project, predictions: list[PredictionRecord],
                                           tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    pl.DataFrame({"prediction_id": [p.id for p in predictions[:3]], "label": [0, 1, 1]}).write_csv(path)
    result = import_feedback(project, path)
    assert (result.rows, result.created, result.already, result.matched_by) == (3, 3, 0, "prediction_id")
    assert labels(project) == {predictions[0].id: "0", predictions[1].id: "1", predictions[2].id: "1"}
    again = import_feedback(project, path)
    assert (again.created, again.already) == (0, 3)
    assert len(labels(project)) == 3


def test_import_by_record_matches_the_logged_input(project: Project, predictions: list[PredictionRecord],
                                                   tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    # integers in the file match the floats that were logged
    pl.DataFrame({"x": [3, 0], "color": ["red", "blue"], "label": ["0", "1"]}).write_ndjson(path)
    result = import_feedback(project, path)
    assert (result.created, result.matched_by) == (2, "record")
    assert labels(project) == {predictions[3].id: "0", predictions[0].id: "1"}


def test_unknown_prediction_id_names_the_row_and_stores_nothing(
    project: Project, predictions: list[PredictionRecord], tmp_path: Path
) -> None:
    path = tmp_path / "labels.csv"
    pl.DataFrame({"prediction_id": [predictions[0].id, "nope"], "label": [1, 0]}).write_csv(path)
    with pytest.raises(NotFoundError, match=r"labels.csv row 2: no prediction 'nope'"):
        import_feedback(project, path)
    assert labels(project) == {}


def test_unmatched_record_and_bad_label_name_their_rows(
    project: Project, predictions: list[PredictionRecord], tmp_path: Path
) -> None:
    path = tmp_path / "records.csv"
    pl.DataFrame({"x": [1.0, 99.0], "color": ["red", "red"], "label": [1, 1]}).write_csv(path)
    with pytest.raises(NotFoundError, match="records.csv row 2: no logged prediction"):
        import_feedback(project, path)
    path = tmp_path / "bad.csv"
    pl.DataFrame({"prediction_id": [predictions[0].id], "label": ["maybe"]}).write_csv(path)
    with pytest.raises(DataError, match=r"bad.csv row 1: label 'maybe' is not one of the model's classes"):
        import_feedback(project, path)
    assert labels(project) == {}


def test_bad_files(project: Project, tmp_path: Path) -> None:
    no_label = tmp_path / "x.csv"
    pl.DataFrame({"prediction_id": ["a"]}).write_csv(no_label)
    with pytest.raises(DataError, match="no 'label' column"):
        import_feedback(project, no_label)
    with pytest.raises(DataError, match="cannot read a .xlsx"):
        import_feedback(project, tmp_path / "x.xlsx")


def test_cli_command(project: Project, predictions: list[PredictionRecord], tmp_path: Path) -> None:
    (tmp_path / "flywheel.yaml").write_text("data: {source: data.csv, target: y}\n")
    path = tmp_path / "labels.csv"
    pl.DataFrame({"prediction_id": [predictions[4].id], "label": [0]}).write_csv(path)
    app = typer.Typer()
    app.add_typer(feedback_app, name="feedback")  # as the integrator wires it
    r = CliRunner().invoke(app, ["feedback", "import", str(path), "--config", str(tmp_path / "flywheel.yaml")])
    assert r.exit_code == 0, r.output
    assert "1 feedback rows stored" in r.output
    assert labels(project) == {predictions[4].id: "0"}
