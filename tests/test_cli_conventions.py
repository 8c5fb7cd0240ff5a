"""What users expect of a command line: a damaged store gets one line, not a traceback; an
alias never moves to a bundle that fails verification; ``--version``, ``--json``, shell
completion and configuration by environment variables."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cli_helpers import flywheel

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "breast-cancer" / "flywheel.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("conv")
    (folder / "flywheel.yaml").write_text(EXAMPLE.read_text().replace("epochs: 50", "epochs: 2"))
    r = flywheel("run", "--no-progress", cwd=folder)
    assert r.code == 0, r.err
    return folder


@pytest.fixture
def project(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained project, free to damage."""
    folder = tmp_path / "p"
    shutil.copytree(trained, folder)
    return folder


def damage(db: Path, kind: str) -> None:
    for side in db.parent.glob(db.name + "-*"):  # the WAL would otherwise repair a truncation
        side.unlink()
    if kind == "truncated":
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    elif kind == "random":
        db.write_bytes(os.urandom(40_000))
    else:
        db.unlink()
        db.mkdir()


def assert_store_error(result, db: Path) -> None:  # noqa: ANN001
    lines = [line for line in result.err.strip().splitlines() if line]
    assert result.code == 2, result.err
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    assert lines[0].startswith(f"error: {db}") and "backup" in lines[0] and "move it aside" in lines[0], lines[0]


@pytest.mark.parametrize("kind", ["truncated", "random", "directory"])
def test_a_damaged_store_is_one_line_naming_the_file(project: Path, kind: str) -> None:
    db = project / ".flywheel" / "flywheel.db"
    damage(db, kind)
    for command in (("models", "list"), ("run", "--no-progress"), ("serve", "--port", "1"),
                    ("lineage", "0123456789abcdef"), ("data", "list")):
        assert_store_error(flywheel(*command, cwd=project), db.resolve())


def test_promote_and_rollback_refuse_a_bundle_that_fails_verification(project: Path) -> None:
    show = json.loads(flywheel("models", "show", "v1", "--json", cwd=project).out)
    weights = Path(show["bundle"]) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    r = flywheel("models", "promote", "v1", "--alias", "staging", cwd=project)
    lines = r.err.strip().splitlines()
    assert r.code == 2 and len(lines) == 1 and "Traceback" not in r.err, r.err
    assert "model v1 fails verification, staging not moved" in lines[0] and "model.safetensors" in lines[0]
    after = json.loads(flywheel("models", "show", "v1", "--json", cwd=project).out)
    assert after["aliases"] == ["champion"]
    assert not [h for h in after["alias_history"] if h["alias"] == "staging"]


def test_version_completion_and_json_listings(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import typer.completion

    r = flywheel("--version", cwd=trained)
    assert r.code == 0 and r.out.startswith("dataflywheel ") and r.out.split()[1][0].isdigit()
    # The shell is detected from the parent processes, which depend on how pytest was started.
    monkeypatch.setattr(typer.completion, "_get_shell_name", lambda: "bash")
    r = flywheel("--show-completion", cwd=trained)
    assert r.code == 0 and "complete" in r.out and "flywheel" in r.out.lower()
    models = json.loads(flywheel("models", "list", "--json", cwd=trained).out)
    assert [m["version"] for m in models] == [1] and models[0]["aliases"] == ["champion"]
    assert isinstance(models[0]["metrics"]["roc_auc"], float)
    datasets = json.loads(flywheel("data", "list", "--json", cwd=trained).out)
    assert len(datasets) == 1 and datasets[0]["rows"] == 569 and sum(datasets[0]["splits"].values()) == 569
    valid = json.loads(flywheel("validate", "--json", cwd=trained).out)
    assert valid["valid"] is True and valid["target"] == "target" and valid["model"] == "mlp"
    r = flywheel("run", "--json", cwd=trained)
    doc = json.loads(r.out)  # stdout holds the JSON document alone
    assert r.code == 0 and doc["version"] == 1 and doc["trained"] is False and doc["champion"] == 1


def test_configuration_from_environment_variables(trained: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with monkeypatch.context() as m:
        m.setenv("FLYWHEEL_CONFIG", str(trained / "flywheel.yaml"))
        assert json.loads(flywheel("models", "list", "--json", cwd=elsewhere).out)[0]["version"] == 1
    monkeypatch.setenv("FLYWHEEL_PROJECT", str(trained))
    assert json.loads(flywheel("validate", "--json", cwd=elsewhere).out)["valid"] is True
    other_db = tmp_path / "other.db"
    monkeypatch.setenv("FLYWHEEL_STORE_URL", f"sqlite:///{other_db}")
    assert json.loads(flywheel("models", "list", "--json", cwd=elsewhere).out) == []
    assert other_db.is_file()


def test_a_missing_predict_input_names_the_file_given(trained: Path) -> None:
    r = flywheel("predict", "no-such-batch.csv", cwd=trained)
    assert r.code == 2 and "Traceback" not in r.err
    assert r.err.startswith("error: no-such-batch.csv: file not found") and "data.source" not in r.err
    r = flywheel("predict", "flywheel.yaml", cwd=trained)
    assert r.code == 2 and "flywheel.yaml: unsupported file type '.yaml'" in r.err and "data.source" not in r.err
