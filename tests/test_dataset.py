"""Dataset versions: content-hash ids, reuse, lineage, atomic writes."""

from pathlib import Path

import polars as pl
import pytest

from dataflywheel.config import config_from_dict
from dataflywheel.data.dataset import get_version, ingest, list_versions
from dataflywheel.store import Project


def make_csv(path: Path, n: int = 200) -> Path:
    import numpy as np

    rng = np.random.default_rng(1)
    x = rng.normal(size=n)
    df = pl.DataFrame({"x": x, "größe": rng.normal(size=n), "colour": rng.choice(["red", "blue"], n),
                       "y": (x > 0).astype(int)})
    df.write_csv(path)
    return path


def cfg_for(tmp_path: Path, **data):  # noqa: ANN003, ANN201
    raw = {"data": {"source": "data.csv", "target": "y", **data}}
    return config_from_dict(raw, base_dir=tmp_path)


def test_ingest_writes_version_with_splits_schema_and_report(tmp_path: Path) -> None:
    make_csv(tmp_path / "data.csv")
    project = Project.open(tmp_path / ".flywheel")
    v = ingest(cfg_for(tmp_path), project)
    assert not v.reused and len(v.id) == 16
    sizes = {n: v.split(n).height for n in ("train", "valid", "test")}
    assert sizes == v.split_sizes and sum(sizes.values()) == 200
    schema = v.schema()
    assert schema.target == "y" and schema.column("größe").type == "number"
    assert v.report["duplicates_removed"] == 0
    assert [r.id for r in list_versions(project)] == [v.id]


def test_unchanged_inputs_reuse_the_version(tmp_path: Path) -> None:
    make_csv(tmp_path / "data.csv")
    project = Project.open(tmp_path / ".flywheel")
    logs: list[str] = []
    first = ingest(cfg_for(tmp_path), project)
    second = ingest(cfg_for(tmp_path), project, log=logs.append)
    assert second.id == first.id and second.reused
    assert any("up to date" in m for m in logs)
    assert len(list_versions(project)) == 1


def test_changed_bytes_or_processing_make_a_new_version(tmp_path: Path) -> None:
    make_csv(tmp_path / "data.csv")
    project = Project.open(tmp_path / ".flywheel")
    a = ingest(cfg_for(tmp_path), project)
    b = ingest(cfg_for(tmp_path, split={"train": 0.6, "valid": 0.2, "test": 0.2}), project)
    with open(tmp_path / "data.csv", "a") as f:
        f.write("0.5,0.1,red,1\n")
    c = ingest(cfg_for(tmp_path), project)
    assert len({a.id, b.id, c.id}) == 3
    assert get_version(project, "latest").id == c.id
    assert get_version(project, a.id[:8]).id == a.id


def test_parents_are_recorded(tmp_path: Path) -> None:
    from dataflywheel.data.dataset import build_version

    make_csv(tmp_path / "data.csv")
    project = Project.open(tmp_path / ".flywheel")
    parent = ingest(cfg_for(tmp_path), project)
    raw = pl.read_csv(tmp_path / "data.csv")
    child = build_version(cfg_for(tmp_path), project, raw, "data.csv + feedback", "fp-child", [parent.id])
    assert get_version(project, child.id).parents == [parent.id]


def test_a_failing_ingest_leaves_no_version_behind(tmp_path: Path) -> None:
    from dataflywheel.errors import DataError

    rows = [f"{i},{i % 2}" for i in range(60)]
    rows[30] = "abc,1"
    (tmp_path / "data.csv").write_text("x,y\n" + "\n".join(rows) + "\n")
    project = Project.open(tmp_path / ".flywheel")
    with pytest.raises(DataError, match="row"):
        ingest(cfg_for(tmp_path, processing={"coerce": "reject"}), project)
    assert list_versions(project) == []
    leftovers = list((tmp_path / ".flywheel" / "artifacts").rglob("*"))
    assert [p for p in leftovers if p.is_file()] == []


def test_ids_hash_only_settings_that_differ_from_defaults(tmp_path: Path) -> None:
    from dataflywheel.data.dataset import data_config_hash

    minimal = cfg_for(tmp_path)
    explicit = cfg_for(tmp_path, split={"train": 0.7, "valid": 0.15, "test": 0.15, "seed": 42},
                       processing={"drop_duplicates": True})
    changed = cfg_for(tmp_path, split={"train": 0.7, "valid": 0.15, "test": 0.15, "seed": 7})
    assert data_config_hash(minimal.data) == data_config_hash(explicit.data)
    assert data_config_hash(minimal.data) != data_config_hash(changed.data)


def test_unknown_excluded_column_is_an_error(tmp_path: Path) -> None:
    from dataflywheel.errors import ConfigError

    make_csv(tmp_path / "data.csv")
    project = Project.open(tmp_path / ".flywheel")
    with pytest.raises(ConfigError, match="data.exclude: no column named 'ghost'"):
        ingest(cfg_for(tmp_path, exclude=["ghost"]), project)
    assert list_versions(project) == []


def test_one_writer_writes_ingested_and_retrain_versions(tmp_path: Path) -> None:
    """``write_version`` writes every version: splits and extras as Parquet, the schema, the report,
    the row with its parent and feedback links; a failed row write leaves no folder behind."""
    from sqlalchemy.exc import IntegrityError

    from dataflywheel.data.dataset import NewVersion, write_version
    from dataflywheel.feedback import trainingset

    from store_helpers import roles

    assert trainingset.write_version is write_version  # the retrain's training set uses the same writer
    make_csv(tmp_path / "data.csv")
    project = Project.open(tmp_path / ".flywheel")
    parent = ingest(cfg_for(tmp_path), project)
    splits = {name: parent.split(name) for name in ("train", "valid", "test")}
    held = splits["test"].head(3)
    new = NewVersion(id="c" * 16, source="by hand", fingerprint="fp", config_hash="h", target="y", n_rows=203,
                     splits=splits, schema=parent.schema(), report={"source": "by hand"}, parents=[parent.id],
                     extra={"holdout": held}, feedback={"train": ["f1"], "holdout": ["f2"]})
    child = write_version(project, new)
    again = get_version(project, child.id)
    assert again.parents == [parent.id] and again.split_sizes == parent.split_sizes and not child.reused
    assert pl.read_parquet(again.path / "holdout.parquet").equals(held)
    assert again.schema().names == parent.schema().names and again.report == {"source": "by hand"}
    assert roles(project, child.id) == {"train": {"f1"}, "holdout": {"f2"}}

    twice = NewVersion(**{**new.__dict__, "id": "d" * 16, "feedback": {"train": ["f1"], "valid": ["f1"]}})
    with pytest.raises(IntegrityError):
        write_version(project, twice)  # one feedback row in two roles: the row write fails
    assert not (tmp_path / ".flywheel" / "artifacts" / "datasets" / ("d" * 16)).exists()
    assert "d" * 16 not in [r.id for r in list_versions(project)]
