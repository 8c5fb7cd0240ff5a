"""examples/assistant in its quick form: BBC News instructions from prepare (a few articles, short
bodies), the example's own flywheel.yaml on a tiny random Llama instead of SmolLM2, and one
``flywheel run``: LoRA SFT, answers scored, and the first version's base model scored on the same
test prompts, with paired bootstrap intervals of the differences in the verdict and the report."""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from cli_helpers import flywheel
from llm_helpers import save_tiny_llama

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "assistant"


def quick_form(folder: Path, base: Path) -> Path:
    """The example's config with the tiny base, a few epochs at a high rate and small caps."""
    from dataflywheel.data.instructions import write_example

    write_example(folder, ["--per-topic", "6", "--max-chars", "80"])
    shutil.copytree(base, folder / "base")
    config = yaml.safe_load((EXAMPLE / "flywheel.yaml").read_text(encoding="utf-8"))
    config["data"]["features"][0]["max_length"] = 96
    config["model"]["params"]["base"] = "base"
    config["train"] |= {"epochs": 6, "lr": 0.05, "threads": 1, "schedule": {"warmup_steps": 0, "decay": "constant"}}
    config["evaluate"]["answers"] = {"max_prompts": 12, "max_new_tokens": 6}
    (folder / "flywheel.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return folder / "flywheel.yaml"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def test_the_quick_example_fine_tunes_and_reports_v1_beside_its_base(base: Path, tmp_path: Path) -> None:
    config = quick_form(tmp_path, base)
    r = flywheel("run", "--no-progress", cwd=tmp_path)
    assert r.code == 0, r.err
    assert "scoring the base model on the same rows" in r.out and "beside its base model: rouge_l" in r.out

    doc = json.loads(flywheel("models", "show", "v1", "--json", cwd=tmp_path).out)
    ours, verdict = doc["metrics"], doc["verdict"]
    assert verdict["decision"] == "champion" and ours["answered"] == 12
    assert len(ours["item_scores"]["rouge_l"]) == 12 and set(ours["item_scores"]["exact_match"]) <= {0.0, 1.0}
    assert sum(ours["item_scores"]["rouge_l"]) / 12 == pytest.approx(ours["rouge_l"], abs=1e-6)
    theirs = verdict["base_metrics"]
    assert theirs["answered"] == 12 and theirs["n"] == ours["n"]  # the same test rows, the same prompts
    assert [s["prompt"] for s in theirs["answer_samples"]] == [s["prompt"] for s in ours["answer_samples"]]
    assert theirs["perplexity"] > ours["perplexity"]  # fine-tuning learnt something the random base had not
    assert set(verdict["intervals"]) == {"rouge_l", "exact_match"}
    for metric, iv in verdict["intervals"].items():
        assert iv["n"] == 12 and iv["confidence"] == 0.95 and iv["low"] <= iv["difference"] <= iv["high"]
        assert iv["ours"] == pytest.approx(ours[metric], abs=1e-6) and iv["theirs"] == pytest.approx(theirs[metric])
        assert iv["difference"] == pytest.approx(ours[metric] - theirs[metric])

    report = Path(doc["report"]).read_text(encoding="utf-8")
    assert "Beside the base model" in report and "<th>base model</th>" in report and "<th>this model</th>" in report
    assert html.escape(theirs["answer_samples"][0]["answer"]) in report
    assert f"{verdict['intervals']['rouge_l']['difference']:+.4f}" in report

    # compare.py splits both models' item scores by instruction: headlines and topics
    import contextlib
    import io
    import runpy
    import sys

    out, argv, cwd = io.StringIO(), sys.argv, Path.cwd()
    try:
        os.chdir(tmp_path)
        sys.argv = ["compare.py", "--json"]
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(EXAMPLE / "compare.py"), run_name="__main__")
    finally:
        sys.argv = argv
        os.chdir(cwd)
    kinds = json.loads(out.getvalue().split("\nheadline: ")[0])
    assert set(kinds) == {"headline", "topic"}
    assert kinds["headline"]["rouge_l"]["n"] + kinds["topic"]["rouge_l"]["n"] == 12

    # the base is not scored again for a challenger: it is gated against the champion, with intervals
    config.write_text(config.read_text(encoding="utf-8").replace("seed: 0", "seed: 1"), encoding="utf-8")
    second = flywheel("run", "--no-progress", cwd=tmp_path)
    assert second.code == 0, second.err
    assert "scoring the base model" not in second.out
    v2 = json.loads(flywheel("models", "show", "v2", "--json", cwd=tmp_path).out)
    assert v2["verdict"]["champion_version"] == 1 and not v2["verdict"]["base_metrics"]
    assert set(v2["verdict"]["intervals"]) == {"rouge_l", "exact_match"}
    assert "Beside the champion v1" in Path(v2["report"]).read_text(encoding="utf-8")


def test_answers_threads_apply_inside_the_block_and_are_restored() -> None:
    import torch

    from dataflywheel.runtime import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
