"""The generation task's data: chat JSONL and prompt/completion columns at ingestion, malformed chats
named by file and line, and the ingestion rules (PII in prompts and completions, duplicate prompts,
prompts shared between splits)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from dataflywheel.config import config_from_dict
from dataflywheel.data.chat import prompt_messages
from dataflywheel.data.dataset import ingest
from dataflywheel.errors import ConfigError, DataError, SchemaError
from dataflywheel.store import Project

MODEL = "causal_lm"  # ingestion does not build the model: no base needed


def chat(user: str, answer: str, system: str | None = None) -> dict[str, Any]:
    turns = [{"role": "system", "content": system}] if system else []
    return {"messages": [*turns, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def config(tmp_path: Path, source: str, **data: Any):  # noqa: ANN201
    raw = {"data": {"source": source, "target": "completion", **data},
           "model": {"type": MODEL, "task": "generation"}}
    return config_from_dict(raw, base_dir=tmp_path)


def ingest_rows(tmp_path: Path, rows: list[Any], **data: Any):  # noqa: ANN201
    write_jsonl(tmp_path / "chats.jsonl", rows)
    return ingest(config(tmp_path, "chats.jsonl", **data), Project.open(tmp_path / ".flywheel"))


def all_rows(version: Any) -> pl.DataFrame:
    return pl.concat([version.split(s) for s in ("train", "valid", "test")])


QUESTIONS = [f"question number {i} about the weather in town" for i in range(30)]


def test_chat_jsonl_becomes_a_prompt_and_a_completion_column(tmp_path: Path) -> None:
    rows = [chat(q, f"answer {i}") for i, q in enumerate(QUESTIONS)]
    rows[0] = chat(QUESTIONS[0], "answer 0", system="You are terse.")
    version = ingest_rows(tmp_path, rows)
    frame = all_rows(version)
    assert set(frame.columns) == {"prompt", "completion"}
    by_answer = dict(zip(frame["completion"], frame["prompt"], strict=True))
    assert by_answer["answer 3"] == QUESTIONS[3]  # one user turn: its text
    with_system = prompt_messages(by_answer["answer 0"])  # a system turn too: the messages, as JSON
    assert with_system == [{"role": "system", "content": "You are terse."}, {"role": "user", "content": QUESTIONS[0]}]
    schema = version.schema()
    assert schema.target == "completion" and schema.column("completion").type == "text"
    assert schema.column("prompt").type == "text"


def test_named_prompt_and_completion_columns_stay_text(tmp_path: Path) -> None:
    # Short numeric answers would be inferred as a number column (and "4" read as 4.0).
    pl.DataFrame({"question": [f"what is {i} plus {i}?" for i in range(30)],
                  "answer": [str(2 * i) for i in range(30)]}).write_csv(tmp_path / "qa.csv")
    cfg = config_from_dict({"data": {"source": "qa.csv", "target": "answer", "prompt": "question"},
                            "model": {"type": MODEL, "task": "generation"}}, base_dir=tmp_path)
    version = ingest(cfg, Project.open(tmp_path / ".flywheel"))
    frame = all_rows(version)
    assert dict(zip(frame["question"], frame["answer"], strict=True))["what is 2 plus 2?"] == "4"
    assert {c.name: c.type for c in version.schema().columns} == {"question": "text", "answer": "text"}


GOOD = json.dumps(chat("a perfectly fine question here", "fine"))


@pytest.mark.parametrize(("line", "problem"), [
    ({"messages": [{"content": "hi"}, {"role": "assistant", "content": "yo"}]}, "message 1 has no role"),
    ({"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
     "message 1 has role 'bot', not one of system, user, assistant"),
    ({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "yo"}]},
     "message 1 has a number content, not a string"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}, {"role": "assistant", "content": "yo"}]},
     "message 1 has a list content, not a string"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "the last message is a user turn"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "no prompt before the assistant's answer"),
    ({"messages": []}, "messages is empty"),
    ({"messages": "hello"}, "messages is a string, not a list of messages"),
    ({"other": 1}, "no messages"),
])
def test_a_malformed_chat_names_its_file_and_line(tmp_path: Path, line: Any, problem: str) -> None:
    path = write_jsonl(tmp_path / "chats.jsonl", [GOOD, GOOD, "", line, GOOD])
    with pytest.raises(DataError) as err:
        ingest(config(tmp_path, "chats.jsonl"), Project.open(tmp_path / ".flywheel"))
    assert err.value.where == f"{path} line 4"  # the blank line 3 counts as a line of the file
    assert problem in err.value.message and "\n" not in str(err.value)


def test_a_line_that_is_not_json_names_its_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "chats.jsonl", [GOOD, '{"messages": [', GOOD])
    with pytest.raises(DataError) as err:
        ingest(config(tmp_path, "chats.jsonl"), Project.open(tmp_path / ".flywheel"))
    assert err.value.where == f"{path} line 2" and "invalid JSON" in err.value.message


def test_prompt_settings_are_refused_where_they_cannot_apply(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "qa.jsonl", [{"q": f"question {i} is here", "completion": "x"} for i in range(10)])
    with pytest.raises(SchemaError) as missing:
        ingest(config(tmp_path, "qa.jsonl"), Project.open(tmp_path / ".flywheel"))
    assert missing.value.where == "data.prompt" and "no prompt column 'prompt'" in missing.value.message
    binary = config_from_dict({"data": {"source": "qa.jsonl", "target": "completion", "prompt": "q"},
                               "model": {"task": "binary"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError) as wrong_task:
        ingest(binary, Project.open(tmp_path / ".flywheel"))
    assert wrong_task.value.where == "data.prompt" and "model.task: generation" in str(wrong_task.value)
    with pytest.raises(ConfigError, match="prompt and target name the same column"):
        config_from_dict({"data": {"source": "qa.jsonl", "target": "q", "prompt": "q"}})


def test_pii_is_redacted_from_prompts_and_completions(tmp_path: Path) -> None:
    rows = [chat(q, f"answer {i}") for i, q in enumerate(QUESTIONS)]
    rows[1] = chat("please email jane.doe@example.com about it", "call me on +1 415 555 0132 tomorrow")
    rows[2] = chat("and bob@example.org?", "done", system="Support desk, phone +44 20 7946 0958")
    version = ingest_rows(tmp_path, rows)
    text = all_rows(version).write_csv()
    for raw in ("jane.doe@example.com", "bob@example.org", "415 555 0132", "7946 0958"):
        assert raw not in text
    frame = all_rows(version)
    answers = dict(zip(frame["completion"], frame["prompt"], strict=True))
    assert answers["call me on [phone] tomorrow"] == "please email [email] about it"
    assert prompt_messages(answers["done"])[0]["content"] == "Support desk, phone [phone]"
    counts = version.report["privacy"]["columns"]
    assert counts["prompt"]["email"] == 2 and counts["prompt"]["phone"] == 1 and counts["completion"]["phone"] == 1


def test_a_json_breaking_replacement_is_refused_for_chat_prompts(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "chats.jsonl", [chat(q, "a", system="be nice") for q in QUESTIONS])
    cfg = config(tmp_path, "chats.jsonl").model_copy(update={"privacy": config_from_dict(
        {"data": {"source": "x", "target": "y"}, "privacy": {"replacement": '"{kind}"'}}).privacy})
    with pytest.raises(ConfigError) as err:
        ingest(cfg, Project.open(tmp_path / ".flywheel"))
    assert err.value.where == "privacy.replacement"


def test_a_prompt_asked_twice_keeps_its_first_completion(tmp_path: Path) -> None:
    rows = [chat(q, f"answer {i}") for i, q in enumerate(QUESTIONS)]
    rows += [chat(QUESTIONS[4], "another answer"), chat(QUESTIONS[7], "answer 7")]
    version = ingest_rows(tmp_path, rows)
    frame = all_rows(version)
    assert frame.height == len(QUESTIONS) and frame["prompt"].n_unique() == len(QUESTIONS)
    assert "another answer" not in frame["completion"].to_list()
    assert version.report["duplicates_removed"] == 2 and version.report["duplicate_columns"] == ["prompt"]
    assert sum(version.report["leakage"].values()) == 0


def test_the_leakage_check_counts_prompts_shared_between_splits(tmp_path: Path) -> None:
    rows = [chat(QUESTIONS[i % 6], f"answer {i}") for i in range(60)]  # 6 prompts, 10 answers each
    version = ingest_rows(tmp_path, rows, processing={"drop_duplicates": False})
    splits = {s: set(version.split(s)["prompt"]) for s in ("train", "valid", "test")}
    expected = {f"{a}/{b}": sum(p in splits[a] for p in version.split(b)["prompt"])
                for a, b in (("train", "valid"), ("train", "test"), ("valid", "test"))}
    assert version.report["leakage"] == expected and expected["train/test"] > 0
