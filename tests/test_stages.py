"""The typed stages of ``flywheel run`` (train -> evaluate -> gate -> register), composed by hand,
and the typed bundle they hand on: what training produces, registration writes and loading reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dataflywheel import registry, stages
from dataflywheel.config import PrivacyConfig, config_from_dict
from dataflywheel.data.dataset import ingest
from dataflywheel.loop import open_project, run_key, train_and_register
from dataflywheel.registry import versions
from dataflywheel.registry.bundle import ModelBundle, read_bundle, write_bundle
from dataflywheel.registry.predictor import Predictor
from dataflywheel.registry.register import RunRecord, register


def config(folder: Path, seed: int = 0):  # noqa: ANN201
    rng = np.random.default_rng(3)
    n = 240
    x = rng.normal(size=(n, 2))
    colour = rng.choice(["red", "blue"], n)
    y = np.where(x[:, 0] + (colour == "red") > 0.5, "yes", "no")
    pl.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "colour": colour, "y": y}).write_csv(folder / "data.csv")
    raw = {"project": "stages", "data": {"source": "data.csv", "target": "y"},
           "model": {"type": "mlp", "params": {"hidden": [8]}},
           "train": {"epochs": 4, "batch_size": 32, "seed": seed}}
    return config_from_dict(raw, base_dir=folder)


def test_stages_compose_by_hand_and_hand_on_typed_outputs(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    project = open_project(cfg)
    try:
        logs: list[str] = []
        dataset = ingest(cfg, project)
        ctx = stages.StageContext(cfg, project, dataset, run_key(cfg, dataset.id), logs.append)
        trained = stages.train_stage(ctx, progress=False)
        assert isinstance(trained.bundle, ModelBundle) and trained.bundle.version is None
        assert trained.bundle.task == "binary" and trained.bundle.target_column == "y"
        assert trained.bundle.spec["type"] == "mlp" and trained.bundle.privacy == cfg.privacy

        evaluated = stages.evaluate_stage(ctx, trained)
        assert evaluated.predictor.bundle is evaluated.bundle
        assert trained.bundle.threshold == 0.5  # the evaluation chose a threshold on a copy
        assert evaluated.metrics["roc_auc"] > 0.5 and evaluated.gate_rows is evaluated.test
        assert evaluated.eval_rows == {"test": evaluated.test.height}

        gated = stages.gate_stage(ctx, evaluated)
        assert gated.champion_version is None and gated.verdict.decision == "champion"

        registered = stages.register_stage(ctx, trained, evaluated, gated)
        assert registered.version == 1 and registered.champion == 1 and registered.report.is_file()
        assert logs[-1].startswith("model v1 registered: champion")
        assert any(line.startswith("test: ") for line in logs)

        loaded = registry.load(project, "champion").predictor.bundle
        assert loaded.version == 1 and loaded.threshold == pytest.approx(evaluated.bundle.threshold)
        assert loaded.spec == evaluated.bundle.spec and loaded.privacy == cfg.privacy

        again = train_and_register(cfg, project, dataset, log=logs.append)  # the runner skips every stage
        assert not again.trained and again.version == 1 and "nothing to train" in logs[-1]
    finally:
        project.close()


def small_bundle(tmp_path: Path) -> ModelBundle:
    from dataflywheel.data.schema import infer_schema
    from dataflywheel.features.preprocessor import Preprocessor
    from dataflywheel.features.target import TargetEncoder
    from dataflywheel.models.registry import build_model, model_spec

    df = pl.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "y": ["n", "y", "n", "y"]})
    pre = Preprocessor([("a", "number", "auto")]).fit(df)
    spec = model_spec("mlp", n_numeric=1, cardinalities=[], n_outputs=1, task="binary", hidden=[4])
    return ModelBundle(model=build_model(spec, seed=0), task="binary", preprocessor=pre,
                       target=TargetEncoder("binary").fit(df["y"]), schema=infer_schema(df, "y"), spec=spec,
                       target_column="y", threshold=0.3, privacy=PrivacyConfig(enabled=False))


def test_a_bundle_reads_back_as_written(tmp_path: Path) -> None:
    bundle = small_bundle(tmp_path)
    write_bundle(tmp_path / "b", bundle, metrics={}, lineage={})
    back = read_bundle(tmp_path / "b")
    assert (back.task, back.spec, back.target_column, back.threshold) == ("binary", bundle.spec, "y", 0.3)
    assert back.privacy == PrivacyConfig(enabled=False) and back.version is None
    assert back.target.classes_ == ["n", "y"] and back.schema is not None and back.schema.target == "y"
    rows = pl.DataFrame({"a": [0.5, 2.5]})
    assert np.allclose(Predictor(back).scores(rows)[0], Predictor(bundle).scores(rows)[0], atol=1e-6)


def test_a_predictor_copy_with_another_network_leaves_the_original(tmp_path: Path) -> None:
    import copy

    original = Predictor(small_bundle(tmp_path))
    other = copy.copy(original)
    other.model = copy.deepcopy(original.model)
    other.threshold = 0.9
    assert original.model is not other.model and original.threshold == 0.3


def test_register_takes_the_bundle_and_a_run_record(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    project = open_project(cfg)
    try:
        dataset = ingest(cfg, project)
        record = RunRecord(run_key="k" * 64, dataset_id=dataset.id, config={}, history=[], lineage={"seed": 0},
                           metrics={"accuracy": 0.5}, verdict=None)
        bundle = small_bundle(tmp_path)
        version = register(project, bundle, record)
        info = versions.resolve(project, version)
        assert (info.task, info.model_type, info.metrics) == ("binary", "mlp", {"accuracy": 0.5})
        assert bundle.version is None  # the registered copy carries the number
        assert registry.load(project, version).predictor.version == version
    finally:
        project.close()
