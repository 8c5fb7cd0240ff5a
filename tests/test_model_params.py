"""Each model type declares its parameters: a wrong ``model.params`` key or value is a one-line
error naming its YAML path, from ``flywheel validate`` before any training."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dataflywheel.errors import ModelError
from dataflywheel.models.registry import available_models, build_model, model_spec, params_class

from cli_helpers import flywheel

CASES = [
    ("mlp", {"hidden": [64, 0]}, "model.params.hidden[1]: "),
    ("mlp", {"hidden": "64"}, "model.params.hidden: "),
    ("mlp", {"activation": "sigmoidish"}, "model.params.activation: must be one of"),
    ("mlp", {"dropout": True}, "model.params.dropout: "),
    ("mlp", {"hiden": [8]}, "model.params.hiden: unknown key"),
    ("transformer", {"n_head": 3, "d_model": 32}, "model.params.d_model: must be a multiple of n_head (3)"),
    ("transformer", {"n_layer": 1.5}, "model.params.n_layer: "),
    ("transformer", {"layers": 2}, "model.params.layers: unknown key"),
    ("pretrained", {"base": "b", "finetune": "partial"}, "model.params.finetune: must be one of"),
    ("pretrained", {"base": "b", "lora": {"r": 0}}, "model.params.lora.r: "),
    ("pretrained", {"base": "b", "lora": {"target_modules": ["q", 7]}}, "model.params.lora.target_modules[1]: "),
    ("pretrained", {"base": "b", "finetune": "full", "lora": {"r": 4}},
     "model.params.lora: applies to finetune: lora only"),
    ("pretrained", {"base": "b", "allow_pickle_weights": "yes"}, "model.params.allow_pickle_weights: "),
    ("pretrained", {"bsae": "b"}, "model.params.bsae: unknown key"),
    ("causal_lm", {"base": "b", "finetune": "full", "lora": {"r": 4}},
     "model.params.lora: applies to finetune: lora only"),  # the shared validator sees each family's finetune
    ("causal_lm", {"base": "b", "finetune": "frozen"}, "model.params.finetune: must be one of"),
]


def write_config(folder: Path, model_type: str, params: dict) -> None:
    (folder / "data.csv").write_text("x,y\n1,0\n2,1\n3,0\n4,1\n")
    cfg = {"data": {"source": "data.csv", "target": "y"}, "model": {"type": model_type, "params": params}}
    (folder / "flywheel.yaml").write_text(yaml.safe_dump(cfg))


@pytest.mark.parametrize("model_type,params,expected", CASES)
def test_validate_names_the_yaml_path_of_a_bad_param(tmp_path: Path, model_type: str, params: dict,
                                                     expected: str) -> None:
    write_config(tmp_path, model_type, params)
    result = flywheel("validate", cwd=tmp_path)
    assert result.code == 2, result.out + result.err
    message = (result.out + result.err).strip()
    assert len(message.splitlines()) == 1, message
    assert "Traceback" not in message
    assert f"flywheel.yaml: {expected}" in message


def test_every_built_in_model_declares_its_params_and_defaults() -> None:
    for name in ("mlp", "transformer", "pretrained"):
        assert name in available_models()
        declared = params_class(name)
        assert declared is not None and declared.model_config.get("extra") == "forbid"
        declared.model_validate({})  # the defaults are valid
    mlp = params_class("mlp").model_validate({})  # type: ignore[union-attr]
    assert (mlp.hidden, mlp.activation, mlp.dropout, mlp.embedding_dim) == ([64, 64], "relu", 0.0, 8)


def test_the_builder_names_the_list_item_too() -> None:
    with pytest.raises(ModelError) as err:
        build_model(model_spec("mlp", n_numeric=2, cardinalities=[], n_outputs=1, task="binary", hidden=[8, -1]))
    assert err.value.where == "model.params.hidden"
    assert "[1]" in err.value.message


def test_a_valid_config_with_params_still_validates(tmp_path: Path) -> None:
    write_config(tmp_path, "mlp", {"hidden": [16, 8], "dropout": 0.1})
    result = flywheel("validate", cwd=tmp_path)
    assert result.code == 0, result.out + result.err


def test_capabilities_are_protocols() -> None:
    from dataflywheel.models import capabilities as cap
    from dataflywheel.models.pretrained import PretrainedClassifier

    mlp = build_model(model_spec("mlp", n_numeric=2, cardinalities=[], n_outputs=1, task="binary"))
    protocols = (cap.SavesTrainedPart, cap.LoadsTrainedPart, cap.BuiltOnBase, cap.WritesBundleFiles,
                 cap.HasInferenceForm)
    assert not any(isinstance(mlp, p) for p in protocols)
    assert all(issubclass(PretrainedClassifier, p) for p in protocols)


def test_loading_a_config_with_params_does_not_import_torch(tmp_path: Path) -> None:
    """Commands that only read the store load the config; the params check (torch) is left to
    validate, run and train."""
    import subprocess
    import sys

    write_config(tmp_path, "mlp", {"hidden": [0]})
    code = ("import sys; from dataflywheel.config import load_config; "
            f"load_config({str(tmp_path / 'flywheel.yaml')!r}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
