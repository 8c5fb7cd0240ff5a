"""Monitoring: PSI / KS drift per feature, live accuracy from feedback, the report and the command."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from scipy.stats import ks_2samp
from sqlalchemy.orm import Session

from dataflywheel.config import config_from_dict
from dataflywheel.feedback import drift
from dataflywheel.feedback.drift import (
    EPSILON,
    category_drift,
    category_reference,
    drift_level,
    numeric_drift,
    numeric_reference,
)
from dataflywheel.feedback.log import FeedbackRow, LogWriter, PredictionRecord, PredictionRow, new_id
from dataflywheel.feedback.monitor import clear_cache, live_accuracy, monitor_report
from dataflywheel.store import Project

from store_helpers import trained_example


def hand_psi(r: list[float], c: list[float]) -> float:
    return sum((ci - ri) * math.log(ci / ri) for ri, ci in zip(r, c, strict=True))


# -- drift.py ------------------------------------------------------------------------------------

def test_numeric_psi_matches_a_hand_computation() -> None:
    ref = numeric_reference(np.arange(1, 11, dtype=float), bins=2)  # one edge, at the median 5.5
    assert ref.edges.tolist() == [5.5] and ref.shares.tolist() == [0.5, 0.5]
    d = numeric_drift(ref, [1.0, 2.0, 3.0, 9.0])
    assert d.psi == pytest.approx(hand_psi([0.5, 0.5], [0.75, 0.25]))
    assert d.n_reference == 10 and d.n_recent == 4


def test_empty_bins_use_epsilon_and_stay_finite() -> None:
    ref = numeric_reference(np.arange(1, 11, dtype=float), bins=2)
    d = numeric_drift(ref, [1.0, 2.0])  # every recent value in the lower bin
    assert d.psi == pytest.approx(hand_psi([0.5, 0.5], [1.0, EPSILON]))
    assert math.isfinite(d.psi) and d.level == "significant"


def test_drifted_data_has_high_psi_and_undrifted_low() -> None:
    rng = np.random.default_rng(0)
    ref = numeric_reference(rng.normal(size=5000), bins=10)
    same = numeric_drift(ref, rng.normal(size=2000))
    shifted = numeric_drift(ref, rng.normal(loc=1.0, size=2000))
    assert same.psi < 0.05 and same.level == "none" and not same.to_dict()["drifted"]
    assert same.psi < 4 * same.psi_noise  # what sampling alone produces
    assert shifted.psi > 0.5 and shifted.level == "significant" and shifted.to_dict()["drifted"]
    assert shifted.ks_pvalue < 1e-6 < same.ks_pvalue


def test_ks_agrees_with_scipy_and_missing_values_are_left_out() -> None:
    rng = np.random.default_rng(1)
    ref_values, recent = rng.normal(size=300), rng.normal(0.3, 1.2, size=120)
    with_missing = pl.Series([*recent.tolist(), None, float("nan"), float("inf")])
    d = numeric_drift(numeric_reference(ref_values), with_missing)
    expected = ks_2samp(ref_values, recent)
    assert d.ks_statistic == pytest.approx(expected.statistic)
    assert d.ks_pvalue == pytest.approx(expected.pvalue)
    assert d.n_recent == 120 and d.missing_recent == 3


def test_drift_levels() -> None:
    assert [drift_level(x) for x in (0.0, 0.099, 0.1, 0.2, 0.21)] == [
        "none", "none", "moderate", "moderate", "significant"]


def test_category_psi_with_unseen_values() -> None:
    ref = category_reference(["a"] * 60 + ["b"] * 40)
    assert dict(zip(ref.categories, ref.shares.tolist(), strict=True)) == {"a": 0.6, "b": 0.4}
    d = category_drift(ref, ["a"] * 50 + ["b"] * 30 + ["c"] * 12 + ["d"] * 8 + [None] * 5)
    # Unseen "c" and "d" share one bucket whose reference share is epsilon.
    assert d.unseen_share == pytest.approx(0.2) and d.missing_recent == 5 and d.n_recent == 100
    assert d.psi == pytest.approx(hand_psi([0.6, 0.4, EPSILON], [0.5, 0.3, 0.2]))
    assert d.ks_statistic is None and d.level == "significant"
    same = category_drift(ref, ["a"] * 6 + ["b"] * 4)
    assert same.psi == pytest.approx(0.0, abs=1e-12) and same.unseen_share == 0.0


def test_category_values_compare_as_strings() -> None:
    ref = category_reference(pl.Series([1.0, 2.0, 2.0, 1.0]))  # whole floats read as "1", "2"
    assert sorted(ref.categories) == ["1", "2"]
    assert category_drift(ref, pl.Series(["1", "2"])).psi == pytest.approx(0.0, abs=1e-12)


def test_no_recent_values_gives_no_psi() -> None:
    d = numeric_drift(numeric_reference([1.0, 2.0, 3.0]), pl.Series([None, None], dtype=pl.Float64))
    assert d.psi is None and d.level is None and d.missing_recent == 2


# -- live accuracy -------------------------------------------------------------------------------

def _prediction(s: Session, version: int | None, predicted: object, labels: list[object],
                kind: str = "label") -> None:
    pid = new_id()
    probabilities = None if isinstance(predicted, float) else {"0": 0.5, "1": 0.5}
    s.add(PredictionRow(id=pid, model_version=version, input={"x": 1.0},
                        output={"prediction": predicted, "probabilities": probabilities}, latency_ms=1.0))
    s.flush()
    for i, label in enumerate(labels):
        s.add(FeedbackRow(id=new_id(), prediction_id=pid, kind=kind, value={kind: label},
                          created_at=_at(i)))


def _at(i: int) -> datetime:
    return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=i)


def test_live_accuracy_overall_and_per_version(tmp_path: Path) -> None:
    project = Project.open(tmp_path / "store")
    LogWriter(project.metadata)  # creates the log tables
    with project.metadata.transaction() as s:
        _prediction(s, 1, "1", ["1"])
        _prediction(s, 1, "0", ["0"])
        _prediction(s, 1, "1", ["0"])
        _prediction(s, 1, "0", [])                # never labelled: not counted
        _prediction(s, 2, "1", ["0", "1"])        # relabelled: the latest label counts (correct)
        _prediction(s, 2, "0", ["1"])
        _prediction(s, 2, "1", ["0"], kind="rating")  # not a label
    live = live_accuracy(project, "binary")
    assert live["metric"] == "accuracy"
    assert live["overall"] == {"n": 5, "accuracy": pytest.approx(3 / 5)}
    assert live["by_version"] == [{"model_version": 1, "n": 3, "accuracy": pytest.approx(2 / 3)},
                                  {"model_version": 2, "n": 2, "accuracy": pytest.approx(1 / 2)}]
    project.close()


def test_live_mae_for_regression(tmp_path: Path) -> None:
    project = Project.open(tmp_path / "store")
    LogWriter(project.metadata)
    with project.metadata.transaction() as s:
        _prediction(s, 3, 10.0, [12.0])
        _prediction(s, 3, 5.0, [4.0])
        _prediction(s, None, 1.0, [1.5])
    live = live_accuracy(project, "regression")
    assert live["overall"] == {"n": 3, "mae": pytest.approx((2 + 1 + 0.5) / 3)}
    assert {r["model_version"]: r["mae"] for r in live["by_version"]} == {None: 0.5, 3: 1.5}
    assert live_accuracy(Project.open(tmp_path / "empty"), "binary")["overall"] == {"n": 0, "accuracy": None}


# -- the report on a constructed dataset version (categories, no training) ------------------------

def test_report_with_category_features_and_reference_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataflywheel.data.dataset import build_version

    rng = np.random.default_rng(2)
    n = 2000
    raw = pl.DataFrame({"x": rng.normal(size=n), "colour": rng.choice(["red", "blue", "grey"], n, p=[0.5, 0.3, 0.2]),
                        "y": rng.integers(0, 2, n)})
    cfg = config_from_dict({"data": {"source": "unused.csv", "target": "y"}}, base_dir=tmp_path)
    project = Project.open(tmp_path / ".flywheel")
    version = build_version(cfg, project, raw, "constructed", "fp", [])
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "lineage.json").write_text(json.dumps({"dataset_id": version.id}))
    predictor = SimpleNamespace(schema=version.schema(), version=None, task="binary", folder=bundle,
                                preprocessor=None)
    assert predictor.schema.column("colour").type == "category"

    recent = [{"x": float(v), "colour": c} for v, c in zip(rng.normal(size=600), ["green"] * 360 + ["red"] * 240,
                                                             strict=True)]
    with LogWriter(project.metadata) as writer:
        writer.log_predictions([PredictionRecord(new_id(), None, r, {"prediction": "1"}, 1.0) for r in recent]).result()

    clear_cache()
    report = monitor_report(project, predictor, window=500, bins=10)
    json.dumps(report, allow_nan=False)
    by_name = {f["feature"]: f for f in report["features"]}
    assert report["dataset_id"] == version.id and report["n_recent"] == 500
    assert report["n_reference"] == version.split_sizes["train"]
    assert by_name["colour"]["drifted"] and by_name["colour"]["unseen_share"] > 0.3  # about 260 of the last 500
    assert by_name["x"]["psi"] < 0.2 and not by_name["x"]["drifted"]
    assert report["drifted"] == ["colour"] and report["max_psi"] == by_name["colour"]["psi"]

    def no_reread(*_a: object) -> None:
        raise AssertionError("reference statistics were not cached")

    monkeypatch.setattr("dataflywheel.data.dataset.get_version", no_reread)
    again = monitor_report(project, predictor, window=500, bins=10)
    assert again["features"] == report["features"]
    project.close()


# -- end to end on a trained breast-cancer project -----------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_example(tmp_path_factory.mktemp("monitor"), epochs=2)


def test_end_to_end_report_and_command(trained: Path) -> None:
    from typer.testing import CliRunner

    from dataflywheel.api import load_model
    from dataflywheel.cli.monitor_command import monitor
    from dataflywheel.loop import as_config, open_project

    cfg = as_config(trained / "flywheel.yaml")
    project = open_project(cfg)
    predictor = load_model("champion", cfg)
    empty = monitor_report(project, predictor, window=100, bins=10)
    assert empty["n_recent"] == 0 and empty["max_psi"] is None and empty["live"]["overall"]["n"] == 0

    dataset = next((trained / ".flywheel" / "artifacts" / "datasets").iterdir())
    held_out = pl.concat([pl.read_parquet(dataset / f"{s}.parquet") for s in ("valid", "test")])
    features, labels = held_out.drop("target"), held_out["target"].to_list()
    shifted = features.with_columns(pl.col("mean radius") * 3)
    with LogWriter(project.metadata) as writer:
        def log(frame: pl.DataFrame) -> list[str]:
            preds = predictor.predict(frame).values
            rows = [PredictionRecord(new_id(), 1, rec, {"prediction": str(p), "probabilities": {}}, 1.0)
                    for rec, p in zip(frame.to_dicts(), preds, strict=True)]
            return writer.log_predictions(rows).result()

        ids = log(features)
        for pid, label in zip(ids[:40], labels[:40], strict=True):
            writer.record_feedback(pid, str(label)).result()
        plain = monitor_report(project, predictor, window=features.height, bins=10)
        log(shifted)
    drifted = monitor_report(project, predictor, window=shifted.height, bins=10)

    psi = {f["feature"]: f["psi"] for f in plain["features"]}
    assert plain["n_recent"] == features.height and len(psi) == 30
    assert float(np.median(list(psi.values()))) < 0.15  # held-out rows come from the training distribution
    radius = next(f for f in drifted["features"] if f["feature"] == "mean radius")
    assert radius["drifted"] and radius["psi"] > 2 and radius["ks_pvalue"] < 1e-10
    assert "mean radius" in drifted["drifted"] and drifted["max_psi"] == radius["psi"]

    predicted = predictor.predict(features.head(40)).values
    expected = sum(str(p) == str(lab) for p, lab in zip(predicted, labels[:40], strict=True)) / 40
    assert drifted["live"]["overall"] == {"n": 40, "accuracy": pytest.approx(expected)}
    project.close()

    import typer

    app = typer.Typer()
    app.command()(monitor)
    app.command("other")(lambda: None)  # keeps `monitor` a named subcommand
    config = str(trained / "flywheel.yaml")
    r = CliRunner().invoke(app, ["monitor", "--config", config, "--window", str(shifted.height), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["drifted"] == drifted["drifted"]
    r = CliRunner().invoke(app, ["monitor", "--config", config], env={"COLUMNS": "120"})
    assert r.exit_code == 0, r.output
    assert "mean radius" in r.output and "significant" in r.output and "live accuracy" in r.output


def test_module_constants_are_the_documented_levels() -> None:
    assert (drift.MODERATE, drift.SIGNIFICANT) == (0.1, 0.2)


# -- a text model: its own statistics, in the report, the command, /v1/monitor and the trigger ---

TEXT_WORDS = {
    "sport": "match team goal coach league striker season cup".split(),
    "money": "bank shares profit market tax budget loan price".split(),
}
TEXT_CONFIG = """
project: monitor-text
data:
  source: data.csv
  target: topic
  features: [{name: text, type: text, max_length: 12, vocab_size: 120}]
model:
  type: transformer
  params: {n_layer: 1, n_head: 2, d_model: 16, dropout: 0.0}
train: {epochs: 2, batch_size: 16, optimizer: adamw, lr: 0.01, seed: 0, early_stopping: null, threads: 1}
retrain: {every_n_labels: null, drift_threshold: 0.5}
monitor: {window: 100, min_recent: 10}
"""


def _sentences(n: int, seed: int, extra: str = "", words: tuple[int, int] = (3, 7)) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        topic = list(TEXT_WORDS)[i % 2]
        text = " ".join(rng.choice(TEXT_WORDS[topic], size=int(rng.integers(*words))))
        rows.append({"text": f"{text} {extra}".strip(), "topic": topic})
    return rows


@pytest.mark.slow
def test_monitor_on_a_text_model_reports_text_drift(tmp_path: Path) -> None:
    import asyncio

    import httpx
    from typer.testing import CliRunner

    from dataflywheel.api import load_model
    from dataflywheel.cli.monitor_command import monitor
    from dataflywheel.feedback.worker import trigger
    from dataflywheel.loop import as_config, open_project, run
    from dataflywheel.serve.app import create_app

    pl.DataFrame(_sentences(120, seed=0)).write_csv(tmp_path / "data.csv")
    (tmp_path / "flywheel.yaml").write_text(TEXT_CONFIG)
    assert run(tmp_path / "flywheel.yaml", progress=False).version == 1
    cfg = as_config(tmp_path / "flywheel.yaml")
    project = open_project(cfg)
    predictor = load_model("champion", cfg)

    def log(rows: list[dict[str, str]]) -> list[str]:
        records = [PredictionRecord(new_id(), 1, {"text": r["text"]}, {"prediction": r["topic"]}, 1.0) for r in rows]
        with LogWriter(project.metadata) as writer:
            return writer.log_predictions(records).result()

    clear_cache()
    log(_sentences(100, seed=1))
    same = monitor_report(project, predictor, window=100, bins=10)
    json.dumps(same, allow_nan=False)
    (text,) = same["features"]
    assert text["feature"] == "text" and "skipped" not in text and text["n_recent"] == 100
    assert not text["drifted"] and text["psi"] < 0.2
    stats = text["text"]
    assert stats["max_length"] == 12 and stats["truncated_share"]["reference"] == 0.0
    assert stats["unknown_share"]["recent"] == pytest.approx(stats["unknown_share"]["reference"], abs=0.01)

    # longer texts full of words the tokenizer never saw: all three statistics move
    ids = log(_sentences(100, seed=2, extra="zqxj vwkp yyqr fjxz qqwv", words=(8, 12)))
    drifted = monitor_report(project, predictor, window=100, bins=10)
    (text,) = drifted["features"]
    stats = text["text"]
    assert text["drifted"] and drifted["drifted"] == ["text"] and drifted["max_psi"] == text["psi"]
    assert stats["length_mean"]["recent"] > 2 * stats["length_mean"]["reference"]
    assert stats["unknown_share"]["recent"] > stats["unknown_share"]["reference"] + 0.1
    assert stats["truncated_share"]["recent"] == 1.0
    assert all(stats[k]["psi"] > 0.2 for k in ("length_mean", "unknown_share", "truncated_share"))

    with LogWriter(project.metadata) as writer:  # one new label: the drift trigger may fire
        writer.record_feedback(ids[0], "sport").result()
    reason = trigger(cfg, project)
    assert reason is not None and reason.startswith("drift: max PSI")
    project.close()

    import typer

    app = typer.Typer()
    app.command()(monitor)
    app.command("other")(lambda: None)
    r = CliRunner().invoke(app, ["monitor", "--config", str(tmp_path / "flywheel.yaml"), "--window", "100"],
                           env={"COLUMNS": "160"})
    assert r.exit_code == 0, r.output
    assert "text text: tokens per text" in r.output and "truncated to 12 tokens 0.0% -> 100.0%" in r.output

    server = create_app(tmp_path / "flywheel.yaml")

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=server), base_url="http://t") as client:
            async with server.router.lifespan_context(server):
                return await client.get("/v1/monitor")

    answer = asyncio.run(get())
    assert answer.status_code == 200, answer.text
    assert answer.json()["features"][0]["text"]["truncated_share"]["recent"] == 1.0

