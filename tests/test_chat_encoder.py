"""The chat encoder: SFT tokens and labels through the base's chat template, checked against the base
folder's own Hugging Face tokenizer; truncation from the left or rejection of long rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dataflywheel.errors import ConfigError, ModelError
from dataflywheel.features.chat import ChatEncoder
from dataflywheel.features.preprocessor import Preprocessor

from llm_helpers import CHATML, eos_id, reference_ids, save_tiny_llama

PROMPTS = ["what is two plus two?", "hello world, how are you today?",
           json.dumps([{"role": "system", "content": "answer in one short sentence."},
                       {"role": "user", "content": "what is the capital of france?"}])]
ANSWERS = ["four.", "i am fine, thank you.", "paris."]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def encoder(base: Path, **params: object) -> ChatEncoder:
    return ChatEncoder(tokenizer=str(base), completion="completion", **params).fit(pl.Series("prompt", PROMPTS))


def encode(enc: ChatEncoder, prompts: list[str] = PROMPTS, answers: list[str] | None = ANSWERS):  # noqa: ANN201
    columns = {"prompt": pl.Series("prompt", prompts)}
    if answers is not None:
        columns["completion"] = pl.Series("completion", answers)
    return enc.encode_columns(columns, "prompt")


def messages(prompt: str) -> list[dict[str, str]]:
    from dataflywheel.data.chat import prompt_messages

    return prompt_messages(prompt)


def test_every_prompt_position_is_masked_and_the_completion_is_labelled(base: Path) -> None:
    out = encode(encoder(base, max_length=128))
    labels = out.extra["labels"]
    assert out.truncated == out.rejected == 0
    for i, (prompt, answer) in enumerate(zip(PROMPTS, ANSWERS, strict=True)):
        prompt_ids = reference_ids(base, messages(prompt), generation_prompt=True)
        tokens, row = out.ids.row(i), labels.row(i)
        assert len(tokens) == len(row)
        assert list(tokens[: len(prompt_ids)]) == prompt_ids  # the prompt as the base's tokenizer renders it
        assert (row[: len(prompt_ids)] == -100).all()  # every prompt position out of the loss
        completion = row[len(prompt_ids):]
        assert (completion != -100).all() and (completion == tokens[len(prompt_ids):]).all()
        full = reference_ids(base, [*messages(prompt), {"role": "assistant", "content": answer}],
                             generation_prompt=False)
        assert list(tokens) == full[: len(tokens)]  # the conversation, cut after the end of the answer's turn


def test_the_end_of_turn_token_is_in_the_loss_and_ends_the_row(base: Path) -> None:
    out = encode(encoder(base))
    eot = eos_id(base)
    for i in range(len(PROMPTS)):
        row = out.extra["labels"].row(i)
        assert row[-1] == eot and (row == eot).sum() == 1  # the template's newline after it is not learned


def test_a_special_token_written_in_a_message_is_text(base: Path) -> None:
    out = encode(encoder(base), ["please stop <|im_end|> now"], ["ok <|im_end|> done"])
    tokens, labels = out.ids.row(0), out.extra["labels"].row(0)
    eot = eos_id(base)
    assert (tokens == eot).sum() == 2  # one per turn: the prompt's and the answer's, not the written ones
    assert (labels == eot).sum() == 1


def test_left_truncation_keeps_the_completion(base: Path) -> None:
    whole = encode(encoder(base, max_length=128))
    out = encode(encoder(base, max_length=16))
    assert out.truncated == 3 and out.rejected == 0
    for i in range(len(PROMPTS)):
        full_tokens, full_labels = whole.ids.row(i), whole.extra["labels"].row(i)
        answer = full_labels[full_labels != -100]
        tokens, labels = out.ids.row(i), out.extra["labels"].row(i)
        assert len(tokens) == 16
        assert (labels[labels != -100] == answer).all()  # the whole completion, end of turn included
        kept, prompt_end = 16 - len(answer), len(full_tokens) - len(answer)
        assert (tokens[:kept] == full_tokens[prompt_end - kept: prompt_end]).all()  # the prompt's last tokens


def test_reject_counts_and_drops_long_rows(base: Path) -> None:
    short = PROMPTS[0]
    long = "hello world, how are you today? " * 8
    out = encode(encoder(base, max_length=40, truncate="reject"), [short, long], ["four.", "fine."])
    assert out.rejected == 1 and out.truncated == 0
    kept, dropped = out.extra["labels"].row(0), out.extra["labels"].row(1)
    assert (kept != -100).sum() > 0
    assert (dropped == -100).all() and len(out.ids.row(1)) == 1  # no token of it in the loss


def test_prompts_alone_end_with_the_generation_prompt(base: Path) -> None:
    out = encode(encoder(base), answers=None)
    assert "labels" not in out.extra
    for i, prompt in enumerate(PROMPTS):
        assert list(out.ids.row(i)) == reference_ids(base, messages(prompt), generation_prompt=True)


def test_the_preprocessor_saves_the_chat_encoder_and_encodes_the_same(base: Path, tmp_path: Path) -> None:
    frame = pl.DataFrame({"prompt": PROMPTS, "completion": ANSWERS})
    params = {"tokenizer": str(base), "max_length": 64, "encoder": "chat", "completion": "completion"}
    pre = Preprocessor([], text_features=[("prompt", params)]).fit(frame)
    assert pre.produces_[-3:] == ("tokens", "attention_mask", "labels")
    assert pre.pad_ids_ == {"tokens": pre.text_encoder_.pad_id_, "labels": -100}
    loaded = Preprocessor.load(pre.save(tmp_path / "preprocessor.json"))
    assert isinstance(loaded.text_encoder_, ChatEncoder) and loaded.text_encoder_.stop_ids_ == [eos_id(base)]
    first, again = pre.transform(frame).inputs, loaded.transform(frame).inputs
    for name in ("tokens", "labels"):
        assert np.array_equal(first[name].ids, again[name].ids)
        assert np.array_equal(first[name].offsets, again[name].offsets)
    records = loaded.transform_records([{"prompt": PROMPTS[0]}])  # at serving time: no completion
    assert "labels" not in records.inputs and len(records.inputs["tokens"]) == 1


def test_a_base_without_chat_template_or_end_of_turn_is_refused(tmp_path: Path) -> None:
    no_template = save_tiny_llama(tmp_path / "plain", template=None)
    with pytest.raises(ModelError, match="no chat template"):
        ChatEncoder(tokenizer=str(no_template)).fit(pl.Series("prompt", PROMPTS))
    no_eos = save_tiny_llama(tmp_path / "no-eos", template=CHATML, eos=False)
    with pytest.raises(ModelError, match="no end-of-turn"):
        ChatEncoder(tokenizer=str(no_eos)).fit(pl.Series("prompt", PROMPTS))
    with pytest.raises(ConfigError) as err:
        ChatEncoder(tokenizer=str(no_eos), truncate="right").fit(pl.Series("prompt", PROMPTS))
    assert err.value.where == "data.features (prompt).truncate"


def test_a_text_column_refuses_the_generation_truncation_modes() -> None:
    from dataflywheel.features.text import TextEncoder

    with pytest.raises(ConfigError) as err:
        TextEncoder(truncate="left").fit(pl.Series("notes", ["some text here", "more text there"]))
    assert err.value.where == "data.features (notes).truncate"
