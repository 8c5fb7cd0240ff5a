"""Faster CPU backends: int8 and ONNX outputs close to fp32 (MLP and a tiny transformer), ONNX
with any batch and sequence length, the export's rewrites on a real model (tanh GELU in int8,
attention without its mask for unpadded batches), the comparison, ``flywheel export`` and serving on ONNX."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
import torch
from onnx import helper
from torch import nn

from dataflywheel.config import FlywheelConfig
from dataflywheel.errors import ConfigError
from dataflywheel.export import OnnxModel, backend_model, compare_backends, export_onnx, quantized_copy
from dataflywheel.export.backends import with_backend
from dataflywheel.export.onnx import export_proto, onnx_program
from dataflywheel.export.rewrites import mask_inputs
from dataflywheel.loop import run
from dataflywheel.registry.bundle import verify_bundle
from dataflywheel.registry.predictor import Predictor

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "breast-cancer" / "flywheel.yaml"
WORDS = {t: (t * 3 + " alpha beta gamma delta").split() for t in ("ab", "cd", "ef")}
TEXT_CONFIG = """
project: export-text
data:
  source: data.csv
  target: topic
  features: [{name: text, type: text, max_length: 10, vocab_size: 100}]
model: {type: transformer, params: {n_layer: 1, n_head: 2, d_model: 16, dropout: 0.0}}
train: {epochs: 2, batch_size: 16, lr: 0.01, seed: 0, early_stopping: null, threads: 1}
evaluate: {metric: macro_f1}
"""


@pytest.fixture(scope="module")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("export_mlp")
    (folder / "flywheel.yaml").write_text(EXAMPLE.read_text().replace("epochs: 50", "epochs: 3"))
    assert run(folder / "flywheel.yaml", progress=False).version == 1
    return folder


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("export_text")
    rng = random.Random(0)
    rows = [{"text": " ".join(rng.choice(words) for _ in range(rng.randint(2, 12))), "topic": t}
            for _ in range(25) for t, words in WORDS.items()]
    pl.DataFrame(rows).write_csv(folder / "data.csv")
    (folder / "flywheel.yaml").write_text(TEXT_CONFIG)
    assert run(folder / "flywheel.yaml", progress=False).version == 1
    return folder


def champion(folder: Path) -> Predictor:
    import dataflywheel as fw

    return fw.load_model("champion", folder / "flywheel.yaml")


def test_split(folder: Path) -> pl.DataFrame:
    return pl.read_parquet(next((folder / ".flywheel" / "artifacts" / "datasets").iterdir()) / "test.parquet")


test_split.__test__ = False  # type: ignore[attr-defined]


# -- int8 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["tabular", "text"])
def test_int8_copy_is_close_to_fp32_and_leaves_the_model_alone(which: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(which)
    predictor = champion(folder)
    df = test_split(folder)
    q = quantized_copy(predictor.model)
    linear = [m for m in q.modules() if type(m) is nn.Linear]
    assert not linear, "every nn.Linear is replaced by its quantised version"
    assert any(type(m) is nn.Linear for m in predictor.model.modules())
    fp32, _ = predictor.scores(df)
    int8, _ = with_backend(predictor, "int8").scores(df)
    assert int8.shape == fp32.shape
    assert 0 < np.abs(int8 - fp32).max() < 0.05  # quantisation changes the numbers, a little


# -- ONNX ------------------------------------------------------------------------------------

def test_onnx_text_model_takes_any_batch_and_sequence_length(text: Path, tmp_path: Path) -> None:
    predictor = champion(text)
    path = export_onnx(predictor, tmp_path)
    assert path == tmp_path / "model.onnx" and path.stat().st_size > 0
    onnx_model = OnnxModel(path, threads=1)
    model = predictor.model
    vocab = model.tok_emb.num_embeddings
    gen = torch.Generator().manual_seed(0)
    for batch, length in [(1, 1), (3, 4), (9, model.max_length)]:
        tokens = torch.randint(0, vocab, (batch, length), generator=gen)
        mask = torch.rand(batch, length, generator=gen) > 0.3
        mask[:, 0] = True
        args = {"numeric": torch.zeros(batch, 0), "categorical": torch.zeros(batch, 0, dtype=torch.long)}
        with torch.inference_mode():
            expected = model(args | {"tokens": tokens, "attention_mask": mask})
        got = onnx_model(args | {"tokens": tokens, "attention_mask": mask})
        assert got.shape == (batch, 3)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_onnx_backend_predicts_like_fp32(tabular: Path, text: Path) -> None:
    for folder in (tabular, text):
        predictor = champion(folder)
        df = test_split(folder)
        onnx = with_backend(predictor, "onnx")
        assert isinstance(onnx.model, OnnxModel) and onnx.model is not predictor.model
        np.testing.assert_allclose(onnx.scores(df)[0], predictor.scores(df)[0], atol=1e-5)
        assert onnx.predict(df).values == predictor.predict(df).values


def test_backend_model_rejects_an_unknown_backend(tabular: Path) -> None:
    predictor = champion(tabular)
    assert backend_model(predictor, "torch") is predictor.model
    with pytest.raises(ConfigError, match="serve.backend"):
        backend_model(predictor, "gpu")  # type: ignore[arg-type]


def test_serve_backend_is_a_config_choice() -> None:
    base = {"data": {"source": "x.csv", "target": "y"}}
    assert FlywheelConfig.model_validate(base).serve.backend == "torch"
    assert FlywheelConfig.model_validate(base | {"serve": {"backend": "onnx"}}).serve.backend == "onnx"
    with pytest.raises(ValueError):
        FlywheelConfig.model_validate(base | {"serve": {"backend": "tensorrt"}})


# -- comparison and CLI ----------------------------------------------------------------------

def test_compare_backends_is_json_safe_and_measures_each(text: Path) -> None:
    predictor = champion(text)
    df = test_split(text)
    result = compare_backends(predictor, df, repeats=1)
    json.dumps(result, allow_nan=False)
    assert result["rows"] == df.height and set(result["backends"]) == {"torch", "int8", "onnx", "onnx-int8"}
    torch_, int8, onnx, onnx_int8 = (result["backends"][b] for b in ("torch", "int8", "onnx", "onnx-int8"))
    assert torch_["max_abs_diff"] == 0.0 and torch_["label_agreement"] == 1.0
    assert onnx["max_abs_diff"] < 1e-5 and onnx["metrics"] == pytest.approx(torch_["metrics"])
    assert 0 < int8["max_abs_diff"] < 0.05 and 0 < onnx_int8["max_abs_diff"] < 0.05
    assert {"accuracy", "macro_f1"} <= set(torch_["metrics"])
    assert all(b["rows_per_s"] > 0 for b in result["backends"].values())
    no_labels = compare_backends(predictor, df.drop("topic"), backends=("onnx",), repeats=1)
    assert set(no_labels["backends"]) == {"onnx"} and no_labels["backends"]["onnx"]["metrics"] == {}


def test_export_command_writes_beside_the_bundle_and_compares(tabular: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from dataflywheel.cli.export_command import export

    result = export(config=tabular / "flywheel.yaml", as_json=True)
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result))
    bundle = champion(tabular).folder
    assert Path(result["path"]) == bundle / "exports" / "model.onnx"
    assert (bundle / "exports" / "model.int8.onnx").is_file()  # the comparison's int8 export is kept too
    verify_bundle(bundle)  # the manifest-checked files are untouched
    comparison = result["comparison"]["backends"]
    assert comparison["onnx"]["max_abs_diff"] < 1e-5 and comparison["int8"]["max_abs_diff"] > 0
    assert comparison["torch"]["metrics"]["roc_auc"] > 0.5

    target = tmp_path / "out" / "mlp.onnx"
    again = export(model=str(bundle), output=target, config=tabular / "flywheel.yaml")
    assert Path(again["path"]) == target and target.stat().st_size > 0 and "comparison" not in again
    assert "wrote" in capsys.readouterr().out
    int8 = export(format="int8", config=tabular / "flywheel.yaml", compare=False)
    assert int8["path"] is None and "int8" in capsys.readouterr().out


def test_export_command_writes_an_int8_onnx_file(text: Path) -> None:
    import onnx

    from dataflywheel.cli.export_command import export

    result = export(format="onnx-int8", config=text / "flywheel.yaml", as_json=True)
    path = Path(result["path"])
    assert path.name == "model.int8.onnx"
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "MatMulInteger" in ops and "MatMul" not in ops - {"MatMulInteger"}  # attention is fused into MHA
    predictor = champion(text)
    df = test_split(text)
    served = copy.copy(predictor)
    served.model = OnnxModel(path)  # the written file runs, and agrees with fp32 on most labels
    agree = np.mean(served.scores(df)[0].argmax(1) == predictor.scores(df)[0].argmax(1))
    assert agree >= 0.9
    assert result["comparison"]["backends"]["onnx-int8"]["label_agreement"] >= 0.9

    from dataflywheel.export import onnx as onnx_export

    def no_export(predictor: Any) -> None:
        raise AssertionError("a server should load the file flywheel export wrote")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx_export, "onnx_program", no_export)
        cached = with_backend(champion(text), "onnx-int8")
        again = compare_backends(champion(text), df, backends=("onnx", "onnx-int8"), repeats=1)  # both kept
        rerun = export(format="onnx-int8", config=text / "flywheel.yaml", as_json=True)  # the cached file
        elsewhere = export(format="onnx-int8", config=text / "flywheel.yaml", as_json=True,
                           output=path.parent / "copy" / "m.onnx")  # a copy of it
    assert set(again["backends"]) == {"onnx", "onnx-int8"}
    assert rerun["path"] == result["path"]
    assert Path(elsewhere["path"]).read_bytes() == path.read_bytes()
    np.testing.assert_array_equal(cached.scores(df)[0], served.scores(df)[0])


def test_an_onnx_export_is_cached_in_the_bundle_and_rebuilt_when_stale(
        tabular: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from dataflywheel.export import onnx as onnx_export

    bundle = tmp_path / "bundle"
    shutil.copytree(champion(tabular).folder, bundle, ignore=shutil.ignore_patterns("exports"))
    df = test_split(tabular)
    first = with_backend(Predictor.load(bundle), "onnx-int8").scores(df)[0]
    cached = bundle / "exports" / "model.int8.onnx"
    assert cached.is_file() and not (bundle / "exports" / "model.onnx").exists()
    verify_bundle(bundle)  # the manifest's files are untouched

    exports: list[int] = []
    real = onnx_export.onnx_program
    monkeypatch.setattr(onnx_export, "onnx_program", lambda p: exports.append(1) or real(p))
    again = with_backend(Predictor.load(bundle), "onnx-int8").scores(df)[0]
    assert exports == []  # loaded, not exported
    np.testing.assert_array_equal(again, first)

    left = bundle / "exports" / ".model.int8.onnx.dead1234.partial"  # a killed writer's temp file
    left.write_bytes(b"x")
    os.utime(left, (0, 0))
    monkeypatch.setattr(onnx_export, "EXPORT_REVISION", onnx_export.EXPORT_REVISION + 1)  # a newer exporter
    with_backend(Predictor.load(bundle), "onnx-int8")
    assert exports == [1] and not left.exists()
    with_backend(Predictor.load(bundle), "onnx-int8")
    assert exports == [1]  # the rebuilt file carries the new key

    cached.write_bytes(cached.read_bytes()[:200])  # damaged: rebuilt, never trusted
    rebuilt = with_backend(Predictor.load(bundle), "onnx-int8").scores(df)[0]
    assert exports == [1, 1] and cached.stat().st_size > 200
    np.testing.assert_array_equal(rebuilt, first)

    def read_only(proto: Any, path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(onnx_export, "_write", read_only)
    with pytest.warns(UserWarning, match="could not cache the ONNX export .*Permission denied"):
        fp32 = with_backend(Predictor.load(bundle), "onnx")  # nothing cached yet for fp32
    np.testing.assert_allclose(fp32.scores(df)[0], Predictor.load(bundle).scores(df)[0], atol=1e-5)
    assert not (bundle / "exports" / "model.onnx").exists()


def test_the_int8_export_runs_gelu_in_tanh_form_and_fp32_stays_exact(text: Path) -> None:
    predictor = champion(text)
    program = onnx_program(predictor)
    ops = lambda proto: [n.op_type for n in proto.graph.node]  # noqa: E731
    assert "BiasGelu" in ops(program) and "FastGelu" not in ops(program)
    int8 = export_proto(predictor, True, program)
    assert "FastGelu" in ops(int8) and "BiasGelu" not in ops(int8)
    assert "BiasGelu" in ops(export_proto(predictor, False, program))


def test_unpadded_batches_run_attention_without_the_mask_and_match_torch(text: Path) -> None:
    predictor = champion(text)
    program = onnx_program(predictor)
    branches = [n for n in program.graph.node if n.op_type == "If"]
    assert len(branches) == 1 and not any(n.op_type == "MultiHeadAttention" for n in program.graph.node)
    for node in branches:
        parts = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        (plain,), (masked,) = parts["then_branch"].node, parts["else_branch"].node
        assert len(plain.input) == 3 and mask_inputs(parts["else_branch"]) == [masked.input[5]]

    model = predictor.model
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, model.tok_emb.num_embeddings, (5, model.max_length), generator=gen)
    full = torch.ones_like(tokens, dtype=torch.bool)
    padded = full.clone()
    padded[1, 6:] = False
    args = {"numeric": torch.zeros(5, 0), "categorical": torch.zeros(5, 0, dtype=torch.long)}
    onnx_model = OnnxModel(program.SerializeToString())
    for mask in (full, padded):
        with torch.inference_mode():
            expected = model(args | {"tokens": tokens, "attention_mask": mask})
        got = onnx_model(args | {"tokens": tokens, "attention_mask": mask})
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)

    for node in branches:  # the masked branch made wrong: only padded batches notice
        masked = next(a for a in node.attribute if a.name == "else_branch").g.node[0]
        masked.input[0], masked.input[2] = masked.input[2], masked.input[0]
    broken = OnnxModel(program.SerializeToString())
    for mask, same in ((full, True), (padded, False)):
        given = args | {"tokens": tokens, "attention_mask": mask}
        a, b = broken(given), onnx_model(given)
        assert torch.allclose(a, b, atol=1e-6) is same


# -- serving ---------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["torch", "onnx-int8"])
def test_an_onnx_served_model_leaves_torch_one_thread(tabular: Path, backend: str) -> None:
    from dataflywheel.loop import as_config, open_project
    from dataflywheel.serve.model import load_served_model

    before = torch.get_num_threads()
    project = open_project(as_config(tabular / "flywheel.yaml"))
    try:
        served = load_served_model(project, "champion", threads=2, backend=backend)
        if backend == "torch":
            assert torch.get_num_threads() == 2 and served.network is None
        else:  # onnxruntime has the two threads; torch only shapes small tensors
            assert torch.get_num_threads() == 1 and served.network.threads == 2
        records = test_split(tabular).drop("target").head(3).to_dicts()
        assert len(served.forward(records)) == 3
    finally:
        project.close()
        torch.set_num_threads(before)

def test_server_on_the_onnx_backend_answers_predict(tabular: Path) -> None:
    from dataflywheel.serve.app import create_app
    from dataflywheel.serve.model import build_served_model

    records = test_split(tabular).drop("target").head(20).to_dicts()
    app = create_app(tabular)

    async def main() -> tuple[Any, Any, Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            async with app.router.lifespan_context(app):
                server = app.state.server
                fp32 = server.model
                onnx = build_served_model(fp32.predictor, fp32.version, fp32.metrics, backend="onnx", threads=1)
                server.model = onnx
                one = await client.post("/v1/predict", json=records[0])
                many = await client.post("/v1/predict", json=records)
                model = await client.get("/v1/model")
                return one, many, (model.json(), fp32.forward(records), onnx)

    one, many, (described, expected, onnx) = asyncio.run(main())
    assert isinstance(onnx.network, OnnxModel) and described["backend"] == "onnx"
    assert one.status_code == 200 and many.status_code == 200
    answers = many.json()
    assert [a["prediction"] for a in answers] == [e["prediction"] for e in expected]
    for got, want in zip(answers, expected, strict=True):
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-5)


def test_serve_backend_from_config_reaches_the_served_model() -> None:
    from dataflywheel.config import ServeConfig
    from dataflywheel.serve.app import ServeSettings

    assert ServeSettings.from_config(ServeConfig(backend="onnx")).backend == "onnx"
    assert ServeSettings.from_config(ServeConfig()).backend == "torch"
