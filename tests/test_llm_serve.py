"""The OpenAI-compatible generation server, driven by the official ``openai`` client over HTTP on
127.0.0.1: answers equal to ``model.generate`` (greedy), streaming, stop strings, n, usage, errors
in OpenAI's shape, every completion logged."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import torch
from server_helpers import serving

from dataflywheel.feedback.log import LogWriter
from dataflywheel.serve.llm.app import create_generation_app
from dataflywheel.serve.llm.engine import CacheSettings
from dataflywheel.serve.llm.generator import ServedGenerator, load_generator
from dataflywheel.serve.llm.protocol import Message
from dataflywheel.store.metadata import MetadataStore

from llm_helpers import save_tiny_llama

openai = pytest.importorskip("openai")


class Served:
    def __init__(self, app: Any, generator: ServedGenerator, writer: LogWriter, base_url: str) -> None:
        self.app = app
        self.generator = generator
        self.writer = writer
        self.base_url = base_url
        self.client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("llm")
    gen = load_generator(save_tiny_llama(root / "tiny-chat"), name="tiny-chat", version=1, max_tokens=64,
                         default_max_tokens=16)
    writer = LogWriter(MetadataStore(f"sqlite:///{root / 'log.db'}"))
    app = create_generation_app(gen, writer, cache=CacheSettings(cache_tokens=2048, page_tokens=16,
                                                                  max_batch_tokens=128))
    with serving(app) as url:
        yield Served(app, gen, writer, url + "/v1")


def greedy(gen: ServedGenerator, ids: list[int], n: int) -> tuple[list[int], str]:
    out = gen.model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                             eos_token_id=gen.eos_ids, pad_token_id=gen.tokenizer.pad_token_id)[0, len(ids):].tolist()
    return out, gen.tokenizer.decode(out, skip_special_tokens=True)


MESSAGES: list[Any] = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the cat sat on"}]


def test_chat_answer_is_model_generate_greedy_and_is_logged(served: Served) -> None:
    gen = served.generator
    r = served.client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=12, temperature=0)
    ids = gen.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False)
    tokens, text = greedy(gen, list(ids), 12)
    assert r.choices[0].message.content == text and r.choices[0].message.role == "assistant"
    assert r.usage is not None and r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == len(tokens)
    assert r.choices[0].finish_reason == ("stop" if tokens[-1] in gen.eos_ids else "length")
    row = served.writer.prediction(r.id)  # sync: committed before the answer
    assert row is not None and row.model_version == 1
    assert row.input["messages"][1]["content"] == "the cat sat on" and row.output["choices"][0]["text"] == text


def test_streamed_chunks_join_to_the_whole_answer_and_done_comes_after_the_commit(served: Served) -> None:
    whole = served.client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=20, temperature=0)
    chunks = list(served.client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=20,
                                                        temperature=0, stream=True,
                                                        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert len({c.id for c in chunks}) == 1 and served.writer.prediction(chunks[0].id) is not None


def test_completions_stop_string_is_never_sent(served: Served) -> None:
    gen = served.generator
    prompt = "the quick brown"
    ids = gen.prompt_ids(prompt)
    _, text = greedy(gen, ids, 24)
    words = [w for w in text.split(" ") if len(w) >= 2]
    if not words:
        pytest.skip("the random model's greedy text has no word to stop at")
    stop = words[len(words) // 2][:2]
    expected = text[: text.index(stop)]
    whole = served.client.completions.create(model="tiny-chat", prompt=prompt, max_tokens=24, temperature=0, stop=stop)
    assert whole.choices[0].text == expected and whole.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in served.client.completions.create(
        model="tiny-chat", prompt=prompt, max_tokens=24, temperature=0, stop=[stop], stream=True) if c.choices)
    assert streamed == expected


def test_n_choices_and_sampling(served: Served) -> None:
    r = served.client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=16, temperature=1.0,
                                              n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    row = served.writer.prediction(r.id)
    assert row is not None and len(row.output["choices"]) == 3
    greedy3 = served.client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=16,
                                                    temperature=0, n=3)
    assert len({c.message.content for c in greedy3.choices}) == 1  # temperature 0: the same answer thrice


def test_models_lists_the_served_model_and_an_unknown_model_is_404(served: Served) -> None:
    assert [m.id for m in served.client.models.list().data] == ["tiny-chat"]
    with pytest.raises(openai.NotFoundError) as exc:
        served.client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    assert exc.value.body["code"] == "model_not_found"  # type: ignore[index]


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"max_tokens": 65}, "max_tokens"),  # above the cap of 64
    ({"max_completion_tokens": 500}, "max_completion_tokens"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
    ({"messages": []}, "messages"),
    ({"extra_body": {"tools": [{"type": "function"}]}}, "tools"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"logprobs": True}, "logprobs"),
])
def test_bad_requests_are_400_in_openai_shape_naming_the_field(served: Served, kwargs: dict[str, Any],
                                                                param: str) -> None:
    args: dict[str, Any] = {"model": "tiny-chat", "messages": MESSAGES, **kwargs}
    with pytest.raises(openai.BadRequestError) as exc:
        served.client.chat.completions.create(**args)
    assert exc.value.body["param"] == param  # type: ignore[index]


def test_neutral_values_of_unimplemented_parameters_are_accepted(served: Served) -> None:
    r = served.client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=4,
                                              presence_penalty=0, frequency_penalty=0, logprobs=False, user="u1")
    assert r.choices[0].finish_reason in ("stop", "length")


def test_a_prompt_longer_than_the_context_is_400_naming_the_limit(served: Served) -> None:
    long = " ".join(["the cat sat on the mat"] * 80)  # > 256 positions
    with pytest.raises(openai.BadRequestError) as exc:
        served.client.completions.create(model="tiny-chat", prompt=long, max_tokens=8)
    assert exc.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    assert "256" in exc.value.body["message"]  # type: ignore[index]


def test_a_client_that_goes_away_stops_its_sequence(served: Served) -> None:
    import httpx

    engine = served.app.state.completions.engine
    finished, cancelled = engine.finished, engine.cancelled
    body = {"model": "tiny-chat", "prompt": "the cat", "max_tokens": 64, "stream": True, "temperature": 1.0}
    with httpx.Client(timeout=30) as http, http.stream("POST", served.base_url + "/completions", json=body) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
    deadline = time.monotonic() + 10
    while (engine._inflight or engine.scheduled()[0]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.cancelled == cancelled + 1 and engine.finished == finished  # stopped, not run to its end
    assert engine.scheduled()[:2] == (0, 0)


def test_metrics_count_tokens_time_to_first_token_and_the_batch(served: Served) -> None:
    import httpx

    served.client.completions.create(model="tiny-chat", prompt="a dog", max_tokens=5, temperature=0)
    text = httpx.get(served.base_url.removesuffix("/v1") + "/metrics").text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values["flywheel_generated_tokens_total"] >= 5
    assert values["flywheel_time_to_first_token_seconds_count"] >= 1
    assert values["flywheel_inter_token_seconds_count"] >= 4
    assert values["flywheel_generation_running"] == 0 and values["flywheel_generation_waiting"] == 0
    assert 0.0 <= values["flywheel_kv_cache_used_ratio"] < 1.0
    assert values['flywheel_requests_total{endpoint="/v1/completions",method="POST",status="200"}'] >= 1


def test_pii_in_prompts_is_redacted_before_the_model_and_the_log_see_it(served: Served) -> None:
    from dataclasses import replace

    from dataflywheel.privacy import Redactor
    from dataflywheel.serve.llm.completions import Completions

    completions: Completions = served.app.state.completions
    redacting = replace(served.generator, redactor=Redactor(["email", "phone"]))
    text = "mail jane.doe@example.com or +44 20 7946 0958"
    body = {"model": "tiny-chat", "messages": [{"role": "user", "content": text}]}
    old = completions.generator
    completions.generator = redacting
    try:
        p = completions.prepare("chat", orjson.dumps(body))
        r = served.client.chat.completions.create(max_tokens=3, **body)  # type: ignore[call-overload]
    finally:
        completions.generator = old
    content = p.logged_input["messages"][0]["content"]
    assert "jane.doe" not in content and "7946" not in content and "[email]" in content
    assert p.prompt_ids[0] == redacting.chat_ids([Message(role="user", content=content)])
    row = served.writer.prediction(r.id)
    assert row is not None and "jane.doe" not in orjson.dumps(row.input).decode()



def test_an_empty_prompt_and_too_many_sequences_are_400(served: Served) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        served.client.completions.create(model="tiny-chat", prompt="", max_tokens=2)
    assert exc.value.body["param"] == "prompt"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as exc:
        served.client.completions.create(model="tiny-chat", prompt=["a dog"] * 5, n=16, max_tokens=2)
    assert exc.value.body["param"] == "n"  # type: ignore[index]
    r = served.client.completions.create(model="tiny-chat", prompt=["a dog", "the cat"], n=2, max_tokens=2)
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
