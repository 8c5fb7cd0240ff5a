"""`flywheel demo`: one whole turn of the loop over real HTTP on 127.0.0.1."""

from pathlib import Path

import pytest

from cli_helpers import flywheel


@pytest.mark.slow
def test_demo_turns_the_loop(tmp_path: Path) -> None:
    r = flywheel("demo", "--folder", str(tmp_path / "demo"), cwd=tmp_path)
    assert r.code == 0, r.err
    assert "1/4" in r.out and "4/4" in r.out
    assert "v2" in r.out and "labelled feedback rows" in r.out
    # validation warnings on feedback: a few lines, the rest counted (30 columns drift here)
    warned = [line for line in r.out.splitlines() if line.startswith("labelled feedback: ")]
    assert 1 <= len(warned) <= 4 and ("more warnings (out_of_range" in warned[-1] or len(warned) < 4), warned
    assert (tmp_path / "demo" / ".flywheel" / "flywheel.db").is_file()
    models = flywheel("models", "list", cwd=tmp_path / "demo")
    assert "v1" in models.out and "v2" in models.out
    if "promoted" in r.out:  # then the last traffic must have been served by v2 after the hot swap
        assert "switched to it" in r.out and "v2: " in r.out
    again = flywheel("demo", "--folder", str(tmp_path / "demo"), cwd=tmp_path)
    assert again.code == 2 and "already holds a flywheel project" in again.err
