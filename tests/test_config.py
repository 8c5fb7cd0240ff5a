from pathlib import Path

import pytest

from dataflywheel.config import FlywheelConfig, config_from_dict, load_config
from dataflywheel.errors import ConfigError

BASE = {"data": {"source": "sklearn:breast_cancer", "target": "target"}}


def with_(path: str, value: object) -> dict:
    import copy

    raw = copy.deepcopy(BASE)
    node = raw
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return raw


def test_minimal_config_gets_defaults() -> None:
    cfg = config_from_dict(BASE)
    assert isinstance(cfg, FlywheelConfig)
    assert cfg.data.source.type == "sklearn" and cfg.data.source.name == "breast_cancer"
    assert cfg.model.type == "mlp" and cfg.train.optimizer == "adam"
    assert cfg.data.split.train + cfg.data.split.valid + cfg.data.split.test == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("data.split.valid", 1.5, "data.split.valid: must be between 0 and 1 (got 1.5)"),
        ("data.splitt", {}, "data.splitt: unknown key; remove it or check its spelling"),
        ("train.optimizer", "rmsprop", "train.optimizer: must be one of"),
        ("train.epochs", 0, "train.epochs:"),
        ("train.device", "gpu", "train.device: must be auto, cpu, cuda or cuda:N (got 'gpu')"),
        ("data.processing.clip_quantiles", [0.9, 0.1], "data.processing.clip_quantiles: must be two quantiles"),
        ("data.split.train", 0.5, "data.split: train + valid + test must sum to 1"),
        ("modle", {}, "modle: unknown key"),
    ],
)
def test_errors_name_the_yaml_path(path: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(with_(path, value))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_target_is_named() -> None:
    with pytest.raises(ConfigError, match="data.target: required"):
        config_from_dict({"data": {"source": "x.csv"}})


def test_sql_source_needs_url_and_query() -> None:
    with pytest.raises(ConfigError, match="sql source needs both url and query"):
        config_from_dict(with_("data.source", {"type": "sql", "url": "sqlite:///x.db"}))


def test_load_config_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "flywheel.yaml"
    p.write_text("data:\n  source: [unclosed\n  target: y\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(p) in str(err.value) and "invalid YAML line" in str(err.value)


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_relative_paths_resolve_against_the_yaml_folder(tmp_path: Path) -> None:
    p = tmp_path / "flywheel.yaml"
    p.write_text("data:\n  source: data/x.csv\n  target: y\n")
    cfg = load_config(p)
    assert cfg.resolve(cfg.data.source.path) == tmp_path / "data" / "x.csv"


def test_section_hash_changes_only_with_its_section() -> None:
    a = config_from_dict(BASE)
    b = config_from_dict(with_("train.epochs", 7))
    assert a.section_hash("data") == b.section_hash("data")
    assert a.section_hash("train") != b.section_hash("train")
