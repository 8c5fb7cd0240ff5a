"""`flywheel run` on a messy chat JSONL with a tiny random Llama base: the dataset (a duplicate prompt
dropped, PII redacted, a too-long prompt cut or rejected), SFT through the one loop, a registered model
version with test loss and perplexity, the gate on a second run, and a loaded bundle that generates."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from cli_helpers import flywheel
from llm_helpers import reference_ids, save_tiny_llama

TOPICS = ["the weather in town", "the capital of france", "two plus two", "how you are today", "the evening rain",
          "a short sentence", "the phone number", "the address below"]
LONG = "please answer in one short sentence: " + "what is the capital of france and the weather in town? " * 6


def chats() -> list[dict[str, Any]]:
    rows = []
    for i in range(40):
        rows.append({"messages": [{"role": "user", "content": f"question {i}: tell me about {TOPICS[i % 8]}"},
                                  {"role": "assistant", "content": f"answer {i}: it is {TOPICS[(i + 3) % 8]}."}]})
    rows[5]["messages"].insert(0, {"role": "system", "content": "you are a helpful assistant."})
    rows[7]["messages"][0]["content"] = "email jane.doe@example.com or call +1 415 555 0132 about the rain"
    rows[8]["messages"][1]["content"] = "write to bob@example.org, he knows."
    rows.append(json.loads(json.dumps(rows[3])))  # the same prompt again: dropped
    rows[-1]["messages"][1]["content"] = "a second answer to question 3"
    for i in range(6):  # longer than max_length with their answer
        rows.append({"messages": [{"role": "user", "content": f"{LONG} ({i})"},
                                  {"role": "assistant", "content": "paris."}]})
    return rows


CONFIG = """
project: assistant
data:
  source: chats.jsonl
  target: completion
  features: [{{name: prompt, max_length: 96, truncate: {truncate}}}]
  split: {{train: 0.6, valid: 0.2, test: 0.2, seed: 3}}
model:
  type: causal_lm
  task: generation
  params: {{base: base, finetune: {finetune}{lora}}}
train: {{epochs: 3, batch_size: 8, optimizer: adamw, lr: 0.01, seed: {seed}, threads: 1, early_stopping: null}}
"""


def write_project(folder: Path, base: Path, *, finetune: str, truncate: str = "left", seed: int = 0) -> Path:
    if not (folder / "base").exists():
        shutil.copytree(base, folder / "base")
    (folder / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chats()), encoding="utf-8")
    lora = ", lora: {r: 4, alpha: 8, dropout: 0.0}" if finetune == "lora" else ""
    (folder / "flywheel.yaml").write_text(CONFIG.format(finetune=finetune, lora=lora, truncate=truncate, seed=seed))
    return folder / "flywheel.yaml"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def too_long(base: Path, frame: pl.DataFrame, max_length: int) -> int:
    """Rows whose prompt and completion (through its end of turn) exceed ``max_length`` tokens, by the
    base's own tokenizer."""
    from dataflywheel.data.chat import prompt_messages

    count = 0
    for prompt, answer in zip(frame["prompt"], frame["completion"], strict=True):
        ids = reference_ids(base, [*prompt_messages(prompt), {"role": "assistant", "content": answer}],
                            generation_prompt=False)
        count += len(ids) - 1 > max_length  # the template's newline after the end of turn is not kept
    return count


def test_flywheel_run_fine_tunes_lora_and_registers_loss_and_perplexity(base: Path, tmp_path: Path) -> None:
    import dataflywheel as fw
    from dataflywheel.registry.generation import generate

    config = write_project(tmp_path, base, finetune="lora")
    checked = flywheel("validate", cwd=tmp_path)
    assert checked.code == 0, checked.err
    r = flywheel("run", "--no-progress", cwd=tmp_path)
    assert r.code == 0, r.err
    assert "redacted 3 PII match(es)" in r.out and "1 duplicate of prompt (data.processing.drop_duplicates)" in r.out
    assert "tokens/s, peak memory" in r.out

    doc = json.loads(flywheel("models", "show", "champion", "--json", cwd=tmp_path).out)
    assert doc["version"] == 1 and doc["model_type"] == "causal_lm" and doc["task"] == "generation"
    metrics = doc["metrics"]
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))
    assert metrics["tokens"] > 0 and metrics["rows_left_out"] == 0
    assert metrics["loss"] < math.log(360)  # trained below a uniform guess over the vocabulary
    version = fw.ingest(config)
    frames = {s: version.split(s) for s in ("train", "valid", "test")}
    assert metrics["n"] == frames["test"].height
    everything = pl.concat(frames.values())
    assert everything.height == 46 and version.report["duplicates_removed"] == 1
    text = everything.write_csv()
    assert "jane.doe@example.com" not in text and "bob@example.org" not in text and "555 0132" not in text
    assert doc["lineage"]["truncated_texts"] == {"prompt": too_long(base, frames["train"], 96)}
    assert doc["lineage"]["truncated_texts"]["prompt"] >= 1
    assert doc["lineage"]["tokens_per_s"] > 0 and doc["lineage"]["peak_memory_mb"] > 0

    bundle = Path(doc["bundle"])
    assert (bundle / "adapter_config.json").is_file()
    assert json.loads((bundle / "model.json").read_text())["base_model"]["path"] == "base"

    model = fw.load_model("champion", config)
    answers = generate(model, frames["test"]["prompt"].to_list()[:2], max_new_tokens=8)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    # answer metrics: greedy answers to the test prompts against the references, by rouge-score
    from rouge_score import rouge_scorer

    test = frames["test"]
    mine = generate(model, test["prompt"].to_list(), max_new_tokens=48)
    refs = test["completion"].to_list()
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    assert metrics["answered"] == test.height and metrics["answers_left_out"] == 0
    assert metrics["rouge_l"] == pytest.approx(sum(scorer.score(r, a)["rougeL"].fmeasure
                                                   for r, a in zip(refs, mine, strict=True)) / test.height)
    assert metrics["exact_match"] == pytest.approx(sum(a.strip().lower() == r.strip().lower()
                                                       for r, a in zip(refs, mine, strict=True)) / test.height)
    assert metrics["answer_samples"][0] == {"prompt": test["prompt"][0], "reference": refs[0], "answer": mine[0]}
    import html

    report = (bundle / "report.html").read_text()
    assert "Sample answers" in report and html.escape(refs[0]) in report

    second = fw.run(write_project(tmp_path, base, finetune="lora", seed=1))  # a challenger, gated on perplexity
    assert second.version == 2 and second.verdict is not None and second.dataset_reused
    assert second.verdict["metric"] == "perplexity" and second.verdict["decision"] in ("promoted", "rejected")
    assert second.verdict["champion"] == pytest.approx(metrics["perplexity"])
    assert [c["metric"] for c in second.verdict["checks"]] == ["perplexity", "rouge_l"]  # rouge_l guards
    # the challenger's report shows the champion's answers beside its own
    v2_report = (bundle.parent / "v2" / "report.html").read_text()
    assert "champion v1" in v2_report and html.escape(mine[0]) in v2_report
    assert second.verdict["champion_answers"][test["prompt"][0]] == mine[0]
    # the gate generated the champion's answers once and kept them for the next gate
    cached = list((bundle.parent / "answers").glob("v1-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text()) == mine
    from dataflywheel.evaluate.stage import evaluate_split
    from dataflywheel.registry import generation

    def no_generation(*_a: object, **_k: object) -> None:
        raise AssertionError("answers were generated again")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(generation, "generate", no_generation)
        again = evaluate_split(fw.load_model(1, config), test, "completion", fw.load_config(config).evaluate)
    assert again.metrics["rouge_l"] == pytest.approx(metrics["rouge_l"])


def test_a_full_fine_tune_with_rejected_prompts(base: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    import dataflywheel as fw

    config = write_project(tmp_path, base, finetune="full", truncate="reject")
    result = fw.run(config)
    assert result.version == 1 and result.metrics["perplexity"] == pytest.approx(math.exp(result.metrics["loss"]))
    version = fw.ingest(config)
    test, train = version.split("test"), version.split("train")
    assert result.metrics["rows_left_out"] == too_long(base, test, 96) >= 1
    assert result.metrics["n"] == test.height - result.metrics["rows_left_out"]
    doc = json.loads(flywheel("models", "show", "1", "--json", cwd=tmp_path).out)
    assert doc["lineage"]["rejected_texts"] == {"prompt": too_long(base, train, 96)}
    assert doc["lineage"]["rejected_texts"]["prompt"] >= 1 and not doc["lineage"]["truncated_texts"]
    with safe_open(str(Path(doc["bundle"]) / "model.safetensors"), "pt") as f:
        assert any(k.endswith("lm_head.weight") for k in f.keys()) and len(list(f.keys())) > 10


@pytest.mark.parametrize("installed", [True, False])
def test_init_on_chat_data_writes_a_generation_config(tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch,
                                                      installed: bool) -> None:
    from dataflywheel import scaffold

    fake_gguf = tmp_path / "pkg" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    monkeypatch.setattr(scaffold, "smollm2_gguf", lambda: fake_gguf if installed else None)
    rows = [{**r, "user_id": i} for i, r in enumerate(chats())]
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = flywheel("init", "--data", "chats.jsonl", cwd=tmp_path)
    assert out.code == 0, out.err
    text = (tmp_path / "flywheel.yaml").read_text()
    from dataflywheel.config import load_config

    cfg = load_config(tmp_path / "flywheel.yaml")
    assert cfg.model.type == "causal_lm" and cfg.model.task == "generation" and cfg.data.target == "completion"
    assert cfg.data.exclude == ["user_id"] and "generation data (chat messages)" in out.out
    params = cfg.model.params
    if installed:
        assert Path(tmp_path, params["base"]).resolve() == fake_gguf.resolve()  # under the project: relative
        assert not Path(params["base"]).is_absolute()
    else:
        assert "# a local AutoModelForCausalLM folder or a .gguf file" in text and "set model.params.base" in out.out
        # the user points base at a model folder and runs: the written config trains as it is
        shutil.copytree(base, tmp_path / "models" / "your-causal-lm")
        (tmp_path / "flywheel.yaml").write_text(text.replace("epochs: 2", "epochs: 1").replace("max_length: 512",
                                                                                             "max_length: 96"))
        ran = flywheel("run", "--no-progress", cwd=tmp_path)
        assert ran.code == 0, ran.err
        assert "model v1" in ran.out


def test_init_without_a_target_on_a_table_names_the_fix(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,4\n")
    out = flywheel("init", "--data", "t.csv", cwd=tmp_path)
    assert out.code != 0 and "--target" in out.err and "Traceback" not in out.err
