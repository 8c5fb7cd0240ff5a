"""Tasks are objects in a registry: a task defined in this file alone trains, evaluates, gates and
serves through the generic loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import polars as pl
import pytest

from dataflywheel.config import config_from_dict
from dataflywheel.errors import ConfigError
from dataflywheel.tasks import ClassTask, Decoded, Task, available_tasks, get_task, register_task, unregister_task


class OrdinalTask(ClassTask):
    """Ordered classes (sorted by name) regressed as their index; the answer is the nearest class."""

    loss = "mse"
    metrics: ClassVar[dict[str, bool]] = {"rank_mae": False, "accuracy": True, "within_one": True}
    unbounded = frozenset({"rank_mae"})
    guards = ("accuracy",)
    headline = ("rank_mae", "accuracy")
    target_types = ()

    def encode_target(self, enc: Any, series: pl.Series) -> np.ndarray:
        return self.indices(enc, series).astype(np.float32)

    def _nearest(self, enc: Any, scores: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(np.asarray(scores, dtype=np.float64).reshape(-1)), 0, len(enc.classes_) - 1).astype(
            np.int64)

    def decode_target(self, enc: Any, values: np.ndarray) -> np.ndarray:
        return self.names(enc, self._nearest(enc, values))

    def n_outputs(self, enc: Any) -> int:
        return 1

    def activate(self, logits: np.ndarray) -> np.ndarray:
        return logits[:, 0]

    def decode(self, enc: Any, scores: np.ndarray, threshold: float) -> Decoded:
        s = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
        weight = np.exp(-((s - np.arange(len(enc.classes_))[None, :]) ** 2))
        return Decoded(list(self.decode_target(enc, s)), weight / weight.sum(axis=1, keepdims=True))

    def evaluate(self, y_true: Any, scores: Any, class_names: list[str] | None, threshold: float) -> dict[str, Any]:
        y = np.asarray(y_true, dtype=np.int64)
        k = len(class_names or []) or int(y.max()) + 1
        pred = np.clip(np.rint(np.asarray(scores, dtype=np.float64)), 0, k - 1)
        return {"rank_mae": float(np.mean(np.abs(pred - y))), "accuracy": float(np.mean(pred == y)),
                "within_one": float(np.mean(np.abs(pred - y) <= 1)), "n": int(y.size)}

    def explain_answers(self, enc: Any, cls: np.ndarray, logits: np.ndarray) -> list[Any]:
        return list(self.decode_target(enc, logits[:, 0]))

    def class_name(self, enc: Any, cls: int) -> str | None:
        return None


@pytest.fixture
def ordinal() -> Iterator[Task]:
    task = register_task(name="ordinal", cls=OrdinalTask)
    yield task
    unregister_task("ordinal")


GRADES = ["a-poor", "b-fair", "c-good", "d-great"]


def write_project(folder: Path, seed: int) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 2))
    level = np.clip(np.round(1.5 + 1.2 * x[:, 0] + 0.2 * rng.normal(size=240)), 0, 3).astype(int)
    pl.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "grade": [GRADES[i] for i in level]}).write_csv(folder / "grades.csv")
    config = folder / "flywheel.yaml"
    config.write_text(
        "project: grades\n"
        "data:\n  source: grades.csv\n  target: grade\n  split: {train: 0.6, valid: 0.2, test: 0.2, seed: 1}\n"
        "model:\n  type: mlp\n  task: ordinal\n  params: {hidden: [16]}\n"
        f"train:\n  epochs: 30\n  batch_size: 32\n  lr: 0.01\n  seed: {seed}\n"
    )
    return config


@pytest.mark.slow
def test_a_task_from_this_file_trains_evaluates_gates_and_serves(ordinal: Task, tmp_path: Path) -> None:
    import dataflywheel as fw
    from dataflywheel.loop import run
    from dataflywheel.serve.app import create_app

    first = run(write_project(tmp_path, seed=0), progress=False)
    assert first.version == 1 and first.verdict is not None and first.verdict["decision"] == "champion"
    assert first.metrics["rank_mae"] < 0.5 and first.metrics["accuracy"] > 0.5  # it learned the order
    assert first.verdict["metric"] == "rank_mae"

    second = run(write_project(tmp_path, seed=1), progress=False)  # another seed: a challenger, gated
    assert second.version == 2 and second.verdict is not None
    assert second.verdict["decision"] in ("promoted", "rejected")
    checks = {c["metric"]: c for c in second.verdict["checks"]}
    assert checks["rank_mae"]["role"] == "primary" and checks["rank_mae"]["higher_is_better"] is False
    assert checks["accuracy"]["role"] == "guard" and checks["accuracy"]["tolerance"] == "absolute"
    assert second.report is not None and "rank_mae" in second.report.read_text()

    records = [{"x1": -1.5, "x2": 0.0}, {"x1": 0.0, "x2": 0.0}, {"x1": 1.5, "x2": 0.0}]
    local = fw.load_model("champion", tmp_path / "flywheel.yaml").predict(records)
    assert local.task == "ordinal" and local.class_names == GRADES
    assert local.values[0] < local.values[-1]  # ordered answers, by name

    app = create_app(tmp_path / "flywheel.yaml")

    async def main() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            async with app.router.lifespan_context(app):
                return await client.post("/v1/predict", json=records), await client.get("/v1/model")

    answer, model = asyncio.run(main())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [a["prediction"] for a in body] == list(local.values)
    for a, p in zip(body, local.proba, strict=True):
        assert list(a["probabilities"]) == GRADES
        assert list(a["probabilities"].values()) == pytest.approx(p.tolist(), abs=1e-6)
    assert model.json()["task"] == "ordinal" and model.json()["threshold"] is None


def test_register_task_rejects_a_duplicate_name(ordinal: Task) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_task(name="ordinal", cls=OrdinalTask)
    with pytest.raises(ValueError, match="already registered"):
        register_task(name="binary", cls=OrdinalTask)
    assert get_task("ordinal") is ordinal and "ordinal" in available_tasks()


def test_an_unknown_task_is_a_one_line_config_error(tmp_path: Path) -> None:
    from cli_helpers import flywheel

    (tmp_path / "flywheel.yaml").write_text("data:\n  source: x.csv\n  target: y\nmodel:\n  task: ranking\n")
    r = flywheel("validate", cwd=tmp_path)
    assert r.code == 2 and r.err.count("\n") == 1 and "Traceback" not in r.err, r.err
    assert "model.task: must be auto or one of binary, generation, multiclass, regression (got 'ranking')" in r.err

    with pytest.raises(ConfigError) as err:
        config_from_dict({"data": {"source": "x.csv", "target": "y"}, "model": {"task": "ranking"}})
    message = str(err.value)
    assert "\n" not in message and "model.task: must be auto or one of" in message
    assert "'ranking'" in message and all(t in message for t in ("binary", "multiclass", "regression"))
    with pytest.raises(ConfigError) as found:
        get_task("ranking")
    assert found.value.where == "model.task" and "regression" in str(found.value)


def test_the_built_in_tasks_are_registered_with_their_metrics() -> None:
    assert {"binary", "multiclass", "regression"} <= set(available_tasks())
    assert [get_task(t).primary for t in ("binary", "multiclass", "regression")] == ["roc_auc", "macro_f1", "rmse"]
