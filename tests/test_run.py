"""`flywheel run` end to end on breast cancer: quality bar, registry, aliases, bundle, predict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from dataflywheel.errors import BundleIntegrityError, SchemaError

from cli_helpers import flywheel

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "breast-cancer" / "flywheel.yaml"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bc")
    shutil.copy(EXAMPLE, folder / "flywheel.yaml")
    r = flywheel("run", "--no-progress", cwd=folder)
    assert r.code == 0, r.err
    return folder


def champion_metrics(folder: Path) -> dict:
    r = flywheel("models", "show", "champion", "--json", cwd=folder)
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_quality_bar_on_breast_cancer(project: Path) -> None:
    doc = champion_metrics(project)
    assert doc["version"] == 1 and doc["aliases"] == ["champion"]
    assert doc["metrics"]["roc_auc"] >= 0.98
    assert doc["metrics"]["accuracy"] >= 0.95


def test_bundle_and_lineage(project: Path) -> None:
    doc = champion_metrics(project)
    bundle = Path(doc["bundle"])
    for name in ("model.safetensors", "model.json", "preprocessor.json", "schema.json", "metrics.json",
                 "lineage.json", "manifest.json", "report.html"):
        assert (bundle / name).is_file(), name
    lineage = json.loads((bundle / "lineage.json").read_text())
    assert lineage["dataset_id"] == doc["dataset"]
    assert lineage["seed"] == 0 and lineage["threads"] >= 1
    assert {"torch", "numpy", "python"} <= set(lineage["libraries"])
    assert lineage["code_version"].startswith("0.1.0")
    html = (bundle / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
    assert "Explanations (Integrated Gradients)" in html


def test_running_again_trains_nothing(project: Path) -> None:
    r = flywheel("run", "--no-progress", cwd=project)
    assert r.code == 0, r.err
    assert "nothing to train" in r.out and "up to date" in r.out
    listing = flywheel("models", "list", cwd=project).out
    assert "v1" in listing and "v2" not in listing


def test_challenger_gate_promote_and_rollback(project: Path, tmp_path: Path) -> None:
    folder = tmp_path / "p"
    shutil.copytree(project, folder)
    text = (folder / "flywheel.yaml").read_text()
    # A much weaker challenger (one epoch at a tiny learning rate) must not replace the champion.
    (folder / "flywheel.yaml").write_text(text.replace("epochs: 50", "epochs: 1").replace("lr: 0.001", "lr: 0.00001"))
    r = flywheel("run", "--no-progress", cwd=folder)
    assert r.code == 0, r.err
    v2 = json.loads(flywheel("models", "show", "2", "--json", cwd=folder).out)
    assert v2["verdict"]["decision"] == "rejected" and v2["aliases"] == ["challenger"]
    assert "does not beat champion" in v2["verdict"]["reasons"][0]
    assert champion_metrics(folder)["version"] == 1

    assert flywheel("models", "promote", "v2", "--reason", "test", cwd=folder).code == 0
    assert champion_metrics(folder)["version"] == 2
    r = flywheel("models", "rollback", cwd=folder)
    assert r.code == 0 and "v2 -> v1" in r.out
    doc = champion_metrics(folder)
    assert doc["version"] == 1
    actions = [h["action"] for h in doc["alias_history"] if h["alias"] == "champion"]
    assert actions == ["promote", "promote", "rollback"]
    r = flywheel("models", "rollback", cwd=folder)
    assert r.code != 0 and "no earlier version" in r.err


def test_predict_from_the_bundle_alone(project: Path, tmp_path: Path) -> None:
    bundle = Path(champion_metrics(project)["bundle"])
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    test = pl.read_parquet(next((project / ".flywheel" / "artifacts" / "datasets").iterdir()) / "test.parquet")
    test.drop("target").write_csv(tmp_path / "in.csv")
    elsewhere = tmp_path / "empty"
    elsewhere.mkdir()
    r = flywheel("predict", "--model", str(copy), str(tmp_path / "in.csv"), cwd=elsewhere)
    assert r.code == 0, r.err
    out = pl.read_csv(r.out.encode())
    assert out.columns == ["prediction", "proba_0", "proba_1"] and out.height == test.height
    truth = test.get_column("target").cast(pl.Utf8)
    accuracy = (out.get_column("prediction").cast(pl.Utf8) == truth).mean()
    assert accuracy >= 0.95


def test_predict_keeps_the_columns_asked_for(project: Path, tmp_path: Path) -> None:
    test = pl.read_parquet(next((project / ".flywheel" / "artifacts" / "datasets").iterdir()) / "test.parquet")
    rows = test.drop("target").head(7).with_row_index("row_id", offset=100)
    rows.write_csv(tmp_path / "in.csv")
    r = flywheel("predict", "--keep", "row_id", "--keep", "mean radius", str(tmp_path / "in.csv"), cwd=project)
    assert r.code == 0, r.err
    out = pl.read_csv(r.out.encode())
    assert out.columns[:3] == ["row_id", "mean radius", "prediction"]
    assert out.get_column("row_id").to_list() == list(range(100, 107))
    r = flywheel("predict", "--keep", "nope", str(tmp_path / "in.csv"), cwd=project)
    assert r.code == 2 and r.err.count("\n") == 1 and "'nope'" in r.err and "--keep" in r.err


def test_python_api_matches_cli(project: Path) -> None:
    import dataflywheel as fw

    model = fw.load_model("champion", project / "flywheel.yaml")
    rows = pl.read_parquet(next((project / ".flywheel" / "artifacts" / "datasets").iterdir()) / "test.parquet")
    preds = model.predict(rows.drop("target").head(5).to_dicts())
    assert len(preds.values) == 5 and preds.proba.shape == (5, 2)
    assert model.version == 1


def test_altered_or_missing_bundle_file_is_named(project: Path, tmp_path: Path) -> None:
    from dataflywheel.registry.predictor import Predictor

    bundle = Path(champion_metrics(project)["bundle"])
    altered = tmp_path / "altered"
    shutil.copytree(bundle, altered)
    with open(altered / "preprocessor.json", "a") as f:
        f.write(" ")
    with pytest.raises(BundleIntegrityError, match="preprocessor.json.*altered"):
        Predictor.load(altered)
    missing = tmp_path / "missing"
    shutil.copytree(bundle, missing)
    (missing / "model.safetensors").unlink()
    with pytest.raises(BundleIntegrityError, match="model.safetensors.*missing"):
        Predictor.load(missing)
    r = flywheel("predict", "--model", str(missing), "in.csv", cwd=tmp_path)
    assert r.code == 2 and r.err.count("\n") == 1 and "model.safetensors" in r.err


def test_prediction_input_missing_a_column_is_named(project: Path) -> None:
    import dataflywheel as fw

    model = fw.load_model("champion", project / "flywheel.yaml")
    with pytest.raises(SchemaError, match="mean radius"):
        model.predict([{"mean texture": 1.0}])


def test_train_resume_continues_from_checkpoint(project: Path, tmp_path: Path) -> None:
    folder = tmp_path / "r"
    shutil.copytree(project, folder)
    r = flywheel("train", "--resume", "--no-progress", cwd=folder)
    assert r.code == 0, r.err
    doc = json.loads(flywheel("models", "show", "2", "--json", cwd=folder).out)
    assert doc["lineage"]["resumed_from_epoch"] is not None
    assert doc["metrics"]["roc_auc"] == pytest.approx(champion_metrics(folder)["metrics"]["roc_auc"])


def test_same_seed_gives_identical_metrics(project: Path, tmp_path: Path) -> None:
    folder = tmp_path / "again"
    folder.mkdir()
    shutil.copy(project / "flywheel.yaml", folder / "flywheel.yaml")
    assert flywheel("run", "--no-progress", cwd=folder).code == 0
    assert champion_metrics(folder)["metrics"] == champion_metrics(project)["metrics"]


def test_unseen_category_goes_to_the_unknown_bucket(tmp_path: Path) -> None:
    import numpy as np

    import dataflywheel as fw

    rng = np.random.default_rng(0)
    n = 300
    colour = rng.choice(["red", "green", "blue"], n)
    x = rng.normal(size=n)
    y = ((x + (colour == "red")) > 0.5).astype(int)
    pl.DataFrame({"x": x, "colour": colour, "y": y}).write_csv(tmp_path / "d.csv")
    (tmp_path / "flywheel.yaml").write_text("data: {source: d.csv, target: y}\ntrain: {epochs: 5}\n")
    assert flywheel("run", "--no-progress", cwd=tmp_path).code == 0
    model = fw.load_model("champion", tmp_path / "flywheel.yaml")
    preds = model.predict([{"x": 0.1, "colour": "purple"}, {"x": 0.2, "colour": "red"}, {"x": 0.0, "colour": "mauve"}])
    assert preds.unknown == {"colour": 2} and len(preds.values) == 3


def test_regression_target_with_binary_task_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "flywheel.yaml").write_text(
        "data: {source: 'sklearn:diabetes', target: target}\nmodel: {task: binary}\n")
    r = flywheel("run", "--no-progress", cwd=tmp_path)
    assert r.code == 2 and "model.task" in r.err and "binary task needs exactly 2" in r.err
    assert r.err.count("\n") == 1


@pytest.mark.parametrize(("example", "metric"), [("iris", "macro_f1"), ("diabetes", "r2")])
def test_multiclass_and_regression_run(tmp_path: Path, example: str, metric: str) -> None:
    (tmp_path / "flywheel.yaml").write_text(
        f"data: {{source: 'sklearn:{example}', target: target}}\ntrain: {{epochs: 60, lr: 0.01}}\n")
    r = flywheel("run", "--no-progress", cwd=tmp_path)
    assert r.code == 0, r.err
    m = champion_metrics(tmp_path)["metrics"]
    assert m[metric] > (0.8 if metric == "macro_f1" else 0.3)
