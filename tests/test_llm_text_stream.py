"""TextStream: token ids in, text safe to send out (whole characters, no piece of a stop string)."""

from __future__ import annotations

import random

import pytest

from dataflywheel.serve.llm.text_stream import TextStream

from llm_helpers import tiny_tokenizer


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return tiny_tokenizer()


def stream_all(tok, text: str, stop: tuple[str, ...] = (), step: int = 1) -> tuple[list[str], TextStream]:  # type: ignore[no-untyped-def]
    ids = tok(text, add_special_tokens=False).input_ids
    ts = TextStream(tok, stop)
    chunks = [ts.push(ids[i : i + step]) for i in range(0, len(ids), step)]
    chunks.append(ts.flush())
    return [c for c in chunks if c], ts


@pytest.mark.parametrize("text", ["café crème 🙂 日本語 naïve", "plain ascii text here", "ümlaut🙂🙂x"])
def test_chunks_join_to_the_full_decode_and_never_split_a_character(tok, text: str) -> None:  # type: ignore[no-untyped-def]
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) > len(text.encode()) / 4  # byte-level: multi-byte characters span tokens
    chunks, ts = stream_all(tok, text)
    assert "".join(chunks) == tok.decode(ids) == text == ts.text
    assert all("\ufffd" not in c for c in chunks)


def test_a_stop_string_is_never_sent_and_ends_the_stream(tok) -> None:  # type: ignore[no-untyped-def]
    chunks, ts = stream_all(tok, "stop here STOP then go", stop=("STOP",))
    assert "".join(chunks) == "stop here " and ts.stopped
    assert not any("S" in c for c in chunks)  # no prefix of it was streamed either
    assert ts.push([1, 2, 3]) == "" and ts.flush() == ""


def test_a_stop_prefix_that_never_completes_is_released_at_the_end(tok) -> None:  # type: ignore[no-untyped-def]
    chunks, ts = stream_all(tok, "the cat sat ST", stop=("STOP",))
    assert "".join(chunks) == "the cat sat ST" and not ts.stopped
    assert chunks[-1].endswith("ST")  # held back until flush


def test_the_earliest_of_several_stop_strings_wins_across_random_chunking(tok) -> None:  # type: ignore[no-untyped-def]
    text = "a dog ran in the park then the cat sat on the mat"
    rng = random.Random(0)
    for _ in range(20):
        chunks, ts = stream_all(tok, text, stop=("cat", "park"), step=rng.randint(1, 4))
        assert "".join(chunks) == "a dog ran in the " and ts.stopped


def test_special_tokens_are_not_text(tok) -> None:  # type: ignore[no-untyped-def]
    ids = tok("hello", add_special_tokens=False).input_ids + [tok.convert_tokens_to_ids("<|im_end|>")]
    ts = TextStream(tok)
    assert ts.push(ids) + ts.flush() == "hello"


def test_bytes_that_never_make_a_character_are_sent_at_the_end(tok) -> None:  # type: ignore[no-untyped-def]
    ids = tok("ab", add_special_tokens=False).input_ids + tok("🙂", add_special_tokens=False).input_ids[:2]
    ts = TextStream(tok)
    streamed = ts.push(ids)
    assert streamed + ts.flush() == tok.decode(ids) == ts.text and ts.text.endswith("\ufffd")
