"""Judges: which of two models' answers to the same prompt is better (``evaluate.judge``).

A judge scores each prompt 1 (the challenger's answer wins), 0 (the champion's does) or 0.5 (a
tie); the challenger's ``win_rate`` is the mean, the champion's its complement, and the gate
compares them like any metric (``evaluate.metric: win_rate``, or as a guard).

- ``reference`` (default): the answer with the higher ROUGE-L F1 against the prompt's reference
  wins (the ``rouge-score`` package); equal scores tie.
- ``llm``: a language model reads the prompt, the reference when there is one and the two
  answers, and names the better one; it sees them in both orders, so a judge that favours the
  first (or second) position cannot decide alone: a win needs both orders to agree, a split
  verdict is a tie. The model is any OpenAI-compatible chat endpoint (``judge.url``, e.g. a
  local ``flywheel serve`` or llama.cpp's server; the key from the environment variable
  ``judge.api_key_env``) or a local generation model folder (``judge.model``).

Judges are registered by name (:func:`register_judge`), so another one is a module, not a branch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from dataflywheel.errors import ConfigError, FlywheelError

if TYPE_CHECKING:
    from dataflywheel.config.training import JudgeConfig


class Judge(Protocol):
    def __call__(self, prompts: Sequence[str], references: Sequence[str], challenger: Sequence[str],
                 champion: Sequence[str]) -> list[float]:
        """Per prompt: 1 when the challenger's answer is better, 0 when the champion's is, 0.5 for a tie."""
        ...


_JUDGES: dict[str, Callable[[JudgeConfig], Judge]] = {}


def register_judge(name: str, factory: Callable[[JudgeConfig], Judge]) -> None:
    if name in _JUDGES:
        raise ValueError(f"judge {name!r} is already registered")
    _JUDGES[name] = factory


def make_judge(cfg: JudgeConfig) -> Judge:
    try:
        return _JUDGES[cfg.type](cfg)
    except KeyError:
        raise ConfigError(f"no judge {cfg.type!r}", where="evaluate.judge.type",
                          fix=f"use one of {', '.join(sorted(_JUDGES))}") from None


def win_rate(scores: Sequence[float]) -> float | None:
    return float(sum(scores) / len(scores)) if scores else None


class ReferenceJudge:
    """ROUGE-L F1 against the reference decides (module docstring)."""

    def __init__(self, _cfg: JudgeConfig | None = None) -> None:
        from rouge_score import rouge_scorer

        self.scorer = rouge_scorer.RougeScorer(["rougeL"])

    def __call__(self, prompts: Sequence[str], references: Sequence[str], challenger: Sequence[str],
                 champion: Sequence[str]) -> list[float]:
        out = []
        for ref, ours, theirs in zip(references, challenger, champion, strict=True):
            a = self.scorer.score(ref, ours)["rougeL"].fmeasure
            b = self.scorer.score(ref, theirs)["rougeL"].fmeasure
            out.append(1.0 if a > b else 0.0 if b > a else 0.5)
        return out


JUDGE_PROMPT = """You compare two answers to the same request and say which is better: more correct, \
more helpful, closer to the reference answer when one is given. Reply with one letter: A or B.

Request:
{prompt}
{reference}
Answer A:
{a}

Answer B:
{b}

Which answer is better? Reply A or B."""


def verdict(text: str) -> str | None:
    """``A`` or ``B`` from a judge's reply: its first standalone letter A or B (``B.``,
    ``Answer: B``), else None."""
    import re

    found = re.search(r"\b([AB])\b", text) or re.search(r"\b([ab])\b", text.strip()[:2])
    return found.group(1).upper() if found else None


class LLMJudge:
    """A language model names the better answer, in both orders (module docstring); ``ask(text)``
    is its reply to one prompt."""

    def __init__(self, ask: Callable[[str], str]) -> None:
        self.ask = ask

    def __call__(self, prompts: Sequence[str], references: Sequence[str], challenger: Sequence[str],
                 champion: Sequence[str]) -> list[float]:
        out = []
        for prompt, ref, ours, theirs in zip(prompts, references, challenger, champion, strict=True):
            shown = f"\nReference answer:\n{ref}\n" if ref else ""
            first = verdict(self.ask(JUDGE_PROMPT.format(prompt=prompt, reference=shown, a=ours, b=theirs)))
            second = verdict(self.ask(JUDGE_PROMPT.format(prompt=prompt, reference=shown, a=theirs, b=ours)))
            ours_won = (first == "A") + (second == "B")
            theirs_won = (first == "B") + (second == "A")
            out.append(1.0 if ours_won == 2 else 0.0 if theirs_won == 2 else 0.5)
        return out


def endpoint_asker(cfg: JudgeConfig) -> Callable[[str], str]:
    """Ask an OpenAI-compatible ``/chat/completions`` endpoint (greedy, a few tokens)."""
    import httpx

    if not cfg.url:
        raise ConfigError("an llm judge needs an endpoint or a model", where="evaluate.judge",
                          fix="set judge.url (an OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1) "
                              "or judge.model (a local generation model folder)")
    key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    client = httpx.Client(base_url=cfg.url.rstrip("/"), headers=headers, timeout=cfg.timeout_seconds)

    def ask(text: str) -> str:
        body = {"messages": [{"role": "user", "content": text}], "max_tokens": 4, "temperature": 0}
        if cfg.name:
            body["model"] = cfg.name
        try:
            r = client.post("/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise FlywheelError(f"the judge at {cfg.url} did not answer: {exc}", where="evaluate.judge.url",
                                fix="start the judge's server or fix the URL") from None
        if r.status_code != 200:
            raise FlywheelError(f"the judge at {cfg.url} answered {r.status_code}: {r.text[:200]}",
                                where="evaluate.judge.url")
        return str(r.json()["choices"][0]["message"]["content"] or "")

    return ask


def local_asker(cfg: JudgeConfig) -> Callable[[str], str]:
    """Ask a local ``AutoModelForCausalLM`` folder with a chat template (greedy, a few tokens)."""
    import torch

    from dataflywheel.serve.llm.generator import load_generator

    assert cfg.model is not None
    try:
        gen = load_generator(cfg.model, dtype=torch.float32)
    except OSError as exc:
        raise ConfigError(f"cannot load the judge model ({exc})".splitlines()[0], where="evaluate.judge.model",
                          fix="give a local transformers causal LM folder with a chat template") from None

    def ask(text: str) -> str:
        ids = gen.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                tokenize=True, return_dict=False)
        ids = list(ids["input_ids"] if isinstance(ids, dict) else ids)
        with torch.inference_mode():
            out = gen.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=4, do_sample=False, eos_token_id=gen.eos_ids,
                                     pad_token_id=gen.eos_ids[0] if gen.eos_ids else 0)
        return str(gen.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True))

    return ask


def _llm(cfg: JudgeConfig) -> Judge:
    return LLMJudge(local_asker(cfg) if cfg.model else endpoint_asker(cfg))


register_judge("reference", ReferenceJudge)
register_judge("llm", _llm)
