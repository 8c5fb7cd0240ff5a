"""Feedback on completions becomes the next dataset version of a generation model: SFT rows from
accepted answers and corrections, preference pairs from corrections and choices, good/bad labels,
the newest row per (completion, kind, choice), duplicates dropped, one prompt never on both sides
of the holdout, each row linked to its feedback id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from test_generation_run import write_project

from dataflywheel.data.dataset import get_version
from dataflywheel.feedback.completion_set import LABELS, PAIRS, extra_frame, preference_pairs
from dataflywheel.feedback.log import LogWriter, PredictionRecord
from dataflywheel.feedback.trainingset import build_next_version, holdout_frame, new_label_count
from dataflywheel.loop import as_config, open_project, run
from dataflywheel.registry import versions

from llm_helpers import save_tiny_llama


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    config = write_project(tmp_path_factory.mktemp("assistant"), base, finetune="lora")
    assert run(config, progress=False).version == 1
    return config


class Log:
    """Completions and feedback written through the log writer, as the server writes them."""

    def __init__(self, writer: LogWriter) -> None:
        self.writer = writer
        self.n = 0

    def completion(self, prompt: str | list[dict[str, str]], *answers: str, n: int | None = None) -> str:
        self.n += 1
        cid = f"cmpl{self.n:04d}"
        logged: dict[str, Any] = ({"messages": [{"role": "user", "content": prompt}]} if isinstance(prompt, str)
                                  else {"messages": prompt})
        output = {"choices": [{"index": i, "text": a, "finish_reason": "stop"} for i, a in enumerate(answers)]}
        self.writer.log_predictions([PredictionRecord(cid, 1, logged | {"n": n or len(answers)}, output, 1.0)]).result()
        return cid

    def feedback(self, cid: str, kind: str, **value: Any) -> str:
        return self.writer.record_feedback(cid, value, kind=kind).result().id


def test_completion_feedback_becomes_sft_rows_pairs_and_labels(project: Path) -> None:
    cfg = as_config(project)
    store = open_project(cfg)
    writer = LogWriter(store.metadata).start()
    try:
        log = Log(writer)
        parent = get_version(store, versions.resolve(store, 1).dataset_id)
        test_prompt = parent.split("test")["prompt"][0]
        up = log.feedback(log.completion("what is the rain like?", "wet."), "thumbs", thumbs="up", choice_index=0)
        down = log.feedback(log.completion("what is two plus two?", "five."), "thumbs", thumbs="down", choice_index=0)
        five = log.feedback(log.completion("name a colour", "blue."), "rating", rating=5, choice_index=0)
        three = log.feedback(log.completion("name a city", "paris."), "rating", rating=3, choice_index=0)
        one = log.feedback(log.completion("name a dog", "a cat."), "rating", rating=1, choice_index=0)
        fixed_id = log.completion("spell cat", "kat.")
        fixed = log.feedback(fixed_id, "correction", correction="cat.", choice_index=0)
        same = log.feedback(log.completion("spell dog", "dog."), "correction", correction="dog.", choice_index=0)
        pair_id = log.completion("say hello", "hello!", "go away.", "hello!")
        chose = log.feedback(pair_id, "choice", choice=0)
        again_id = log.completion("is it sunny?", "no.")
        old = log.feedback(again_id, "thumbs", thumbs="down", choice_index=0)
        new = log.feedback(again_id, "thumbs", thumbs="up", choice_index=0)
        log.feedback(log.completion("any news?", "none."), "comment", comment="fine", choice_index=0)
        dup = log.feedback(log.completion("spell cat", "kat."), "correction", correction="cat.", choice_index=0)
        held = log.feedback(log.completion(test_prompt, "an answer."), "correction", correction="the answer.",
                            choice_index=0)
        system = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "name a fruit"}]
        fruit = log.feedback(log.completion(system, "a car.", "an apple."), "choice", choice=1)
        assert new_label_count(store) == 13  # every kind but the lone comment

        built = build_next_version(cfg, store, parent, task="generation")
        assert built is not None
        version = built.dataset
        everything = pl.concat([version.split("train"), version.split("valid"), holdout_frame(version)])
        added = everything.join(pl.concat([parent.split("train"), parent.split("valid")]), on=["prompt", "completion"],
                                how="anti")
        assert sorted(zip(added["prompt"], added["completion"], strict=True)) == sorted([
            ("what is the rain like?", "wet."), ("name a colour", "blue."), ("spell cat", "cat."),
            ("spell dog", "dog."), ("is it sunny?", "no."), (test_prompt, "the answer.")])
        pairs = extra_frame(version, PAIRS)
        fruit_prompt = '[{"role": "system", "content": "be brief"}, {"role": "user", "content": "name a fruit"}]'
        assert sorted(zip(pairs["prompt"], pairs["chosen"], pairs["rejected"], pairs["feedback_id"], strict=True)) == \
            sorted([("spell cat", "cat.", "kat.", fixed), ("say hello", "hello!", "go away.", chose),
                    (test_prompt, "the answer.", "an answer.", held), (fruit_prompt, "an apple.", "a car.", fruit)])
        labels = extra_frame(version, LABELS)
        assert sorted(zip(labels["prompt"], labels["good"], labels["feedback_id"], strict=True)) == sorted([
            ("what is the rain like?", True, up), ("what is two plus two?", False, down), ("name a colour", True, five),
            ("name a dog", False, one), ("is it sunny?", True, new)])

        roles = built.roles
        assert sorted(roles["dropped"]) == sorted([old, dup, three])  # superseded, a duplicate, a middling rating
        assert roles["rejected"] == []
        assert built.dropped == {"superseded": 1, "duplicate": 1, "rating between bad_rating and min_rating": 1}
        assert held in roles["holdout"]  # a prompt of the frozen test split is evaluated, never trained on
        assert pairs.filter(pl.col("prompt") == test_prompt)["split"].to_list() == ["holdout"]
        for prompt in pairs["prompt"]:  # a pair sits on the side of the holdout its prompt's SFT rows sit
            sides = {s for s in pairs.filter(pl.col("prompt") == prompt)["split"]}
            assert len(sides) == 1
            if prompt in set(added["prompt"]):
                in_holdout = prompt in set(holdout_frame(version)["prompt"])
                assert (sides == {"holdout"}) == in_holdout
        used = {*roles["train"], *roles["valid"], *roles["holdout"]}
        assert used == {up, down, five, one, fixed, same, chose, new, held, fruit}
        report = version.report["completion_feedback"]
        assert report["feedback_kinds"] == {"thumbs": 3, "rating": 2, "correction": 3, "choice": 2}
        assert sum(report["sft_rows"].values()) == 6 and report["pairs_total"] == 4
        assert report["labels"] == {"good": 3, "bad": 2}
        train_pairs = preference_pairs(version, "train")
        assert list(train_pairs.columns) == ["prompt", "chosen", "rejected"]

        # the next version keeps these pairs and adds new ones; nothing new: nothing to build
        assert build_next_version(cfg, store, version, task="generation") is None
        more = log.feedback(log.completion("spell cat", "kat!"), "correction", correction="cat.", choice_index=0)
        child = build_next_version(cfg, store, version, task="generation")
        assert child is not None
        grown = extra_frame(child.dataset, PAIRS)
        assert grown.height == 5 and grown.filter(pl.col("feedback_id") == more)["rejected"].to_list() == ["kat!"]
        assert child.roles["dropped"] == []  # the SFT row is a duplicate, the pair is new
    finally:
        writer.close()
        store.close()


def test_filters_leave_other_kinds_pending(project: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "p"
    shutil.copytree(project.parent, folder, ignore=shutil.ignore_patterns(".flywheel"))
    text = (folder / "flywheel.yaml").read_text()
    (folder / "flywheel.yaml").write_text(text + "retrain: {feedback: {kinds: [correction], min_rating: 5}}\n")
    cfg = as_config(folder / "flywheel.yaml")
    assert run(cfg, progress=False).version == 1
    store = open_project(cfg)
    writer = LogWriter(store.metadata).start()
    try:
        log = Log(writer)
        parent = get_version(store, versions.resolve(store, 1).dataset_id)
        thumbs = log.feedback(log.completion("is it warm?", "yes."), "thumbs", thumbs="up", choice_index=0)
        fixed = log.feedback(log.completion("spell cow", "kow."), "correction", correction="cow.", choice_index=0)
        built = build_next_version(cfg, store, parent, task="generation")
        assert built is not None
        assert built.roles["dropped"] == [thumbs] and fixed in {*built.roles["train"], *built.roles["valid"],
                                                                *built.roles["holdout"]}
        assert built.dropped["thumbs not in retrain.feedback.kinds"] == 1
    finally:
        writer.close()
        store.close()


def test_a_rating_threshold_must_be_above_the_bad_one() -> None:
    from pydantic import ValidationError

    from dataflywheel.config.serving import CompletionFeedbackConfig

    with pytest.raises(ValidationError, match="bad_rating"):
        CompletionFeedbackConfig(min_rating=3, bad_rating=3)
