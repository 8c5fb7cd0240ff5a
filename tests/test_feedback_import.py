"""`flywheel feedback import`: labels by prediction id or by record, idempotent, all-or-nothing."""

from __future__ import annotations

import threading
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

from cli_helpers import flywheel

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


def test_a_key_reused_for_another_label_names_the_row_and_the_key(
    project: Project, predictions: list[PredictionRecord], tmp_path: Path
) -> None:
    first = tmp_path / "first.csv"
    pl.DataFrame({"prediction_id": [predictions[0].id], "label": ["1"], "idempotency_key": ["crm-17"]}).write_csv(first)
    assert import_feedback(project, first).created == 1
    assert import_feedback(project, first).already == 1  # the same row again: idempotent
    changed = tmp_path / "changed.csv"
    pl.DataFrame({"prediction_id": [predictions[1].id, predictions[0].id], "label": ["0", "0"],
                  "idempotency_key": ["crm-18", "crm-17"]}).write_csv(changed)
    with pytest.raises(DataError, match=r"changed.csv row 2: idempotency key 'crm-17' was used .* for other feedback"):
        import_feedback(project, changed)
    within = tmp_path / "within.csv"
    pl.DataFrame({"prediction_id": [predictions[2].id] * 2, "label": ["0", "1"],
                  "idempotency_key": ["crm-19"] * 2}).write_csv(within)
    with pytest.raises(DataError, match=r"within.csv row 2: idempotency key 'crm-19' was used by row 1"):
        import_feedback(project, within)
    assert labels(project) == {predictions[0].id: "1"}  # nothing stored from a file with a clash


def test_two_imports_of_one_file_at_once_store_each_row_once(
    project: Project, predictions: list[PredictionRecord], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another import on its own connection commits the same rows after this import looked its
    keys up and before it writes: this one (the CLI) reports them already imported, exit 0."""
    from dataflywheel.feedback import importer

    (tmp_path / "flywheel.yaml").write_text("data: {source: data.csv, target: y}\n")
    path = tmp_path / "labels.csv"
    pl.DataFrame({"prediction_id": [p.id for p in predictions], "label": [0, 1, 1, 0, 1]}).write_csv(path)
    original, other = importer.new_id, {}

    def competitor() -> None:
        p = Project.open(tmp_path / ".flywheel")
        try:
            other["result"] = import_feedback(p, path)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            other["error"] = exc
        finally:
            p.close()

    def new_id() -> str:  # called for the first row to store: the other import runs now, to its commit
        if not other:
            other["started"] = True
            thread = threading.Thread(target=competitor)
            thread.start()
            thread.join(30)
        return original()

    monkeypatch.setattr(importer, "new_id", new_id)
    r = flywheel("feedback", "import", str(path), cwd=tmp_path)
    assert "error" not in other and other["result"].created == 5
    assert r.code == 0, r.err
    assert "0 feedback rows stored, 5 already imported" in r.out and "Traceback" not in r.err
    assert len(labels(project)) == 5


def test_concurrent_imports_in_threads(project: Project, predictions: list[PredictionRecord], tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    pl.DataFrame({"prediction_id": [p.id for p in predictions], "label": [0, 1, 1, 0, 1]}).write_csv(path)
    start, results = threading.Barrier(3), []

    def one() -> None:
        p = Project.open(tmp_path / ".flywheel")
        try:
            start.wait(10)
            results.append(import_feedback(p, path))
        finally:
            p.close()

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 3
    assert sum(r.created for r in results) == 5 and sum(r.already for r in results) == 10
    assert len(labels(project)) == 5
