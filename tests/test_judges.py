"""Judges of two answers: ROUGE-L against the reference, and a language model asked in both orders
(a position-biased judge decides nothing), over an OpenAI-compatible endpoint on 127.0.0.1."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from server_helpers import serving

from dataflywheel.config.training import JudgeConfig
from dataflywheel.errors import ConfigError, FlywheelError
from dataflywheel.evaluate.judges import LLMJudge, ReferenceJudge, make_judge, verdict, win_rate


def test_the_reference_judge_prefers_the_answer_closer_to_the_reference() -> None:
    judge = ReferenceJudge()
    scores = judge(["p1", "p2", "p3"], ["the cat sat", "a dog", "blue"],
                   ["the cat sat", "a cat", "red"], ["a cat", "a dog", "green"])
    assert scores == [1.0, 0.0, 0.5]
    assert win_rate(scores) == pytest.approx(0.5)
    assert win_rate([]) is None


def test_an_llm_judge_needs_both_orders_to_agree() -> None:
    def first_always(_text: str) -> str:
        return "A"

    assert LLMJudge(first_always)(["p"] * 2, ["r"] * 2, ["x", "y"], ["u", "v"]) == [0.5, 0.5]

    def likes_cats(text: str) -> str:
        a = text.split("Answer A:\n")[1].split("\n\nAnswer B:")[0]
        b = text.split("Answer B:\n")[1].split("\n\nWhich")[0]
        return "A" if "cat" in a and "cat" not in b else "B" if "cat" in b and "cat" not in a else "A"

    judge = LLMJudge(likes_cats)
    assert judge(["p", "p", "p"], ["", "", ""], ["a cat", "a dog", "a cat"], ["a dog", "a cat", "a cat"]) == [
        1.0, 0.0, 0.5]
    assert verdict(" b.") == "B" and verdict("Answer: B") == "B" and verdict("A") == "A"
    assert verdict("neither") is None and verdict("") is None


def test_an_llm_judge_over_an_openai_compatible_endpoint() -> None:
    app = FastAPI()
    seen: list[dict[str, object]] = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, object]:
        body = await request.json()
        seen.append(body)
        text = body["messages"][0]["content"]
        a = text.split("Answer A:\n")[1].split("\n\nAnswer B:")[0]
        return {"id": "x", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "A" if "good" in a else "B"},
             "finish_reason": "stop"}]}

    with serving(app) as url:
        judge = make_judge(JudgeConfig(type="llm", url=url + "/v1", name="judge-model"))
        assert judge(["q1", "q2"], ["ref", "ref"], ["good answer", "bad"], ["bad", "good one"]) == [1.0, 0.0]
    assert len(seen) == 4 and all(b["model"] == "judge-model" and b["temperature"] == 0 for b in seen)
    assert "Reference answer:\nref" in seen[0]["messages"][0]["content"]  # type: ignore[index]

    down = make_judge(JudgeConfig(type="llm", url="http://127.0.0.1:9/v1", timeout_seconds=2))
    with pytest.raises(FlywheelError, match="did not answer"):
        down(["q"], ["r"], ["a"], ["b"])


def test_judge_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="no judge"):
        make_judge(JudgeConfig(type="oracle"))
    with pytest.raises(ConfigError, match="judge.url"):
        make_judge(JudgeConfig(type="llm"))
