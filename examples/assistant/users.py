"""Simulated users of the served assistant: they ask about BBC articles the model was not trained
on (two answers per question, ``n: 2``), know the real title and topic, and rate, choose or correct
through ``POST /v1/feedback`` (:mod:`dataflywheel.data.simulated_users`). Then ``flywheel retrain``
learns from them (SFT rows and preference pairs; ``retrain.method: dpo``).

    flywheel serve &                          # v1, OpenAI-compatible, on 127.0.0.1:8000
    python users.py --articles 40             # 40 articles per topic beyond the example's: 400 questions
    flywheel retrain                          # -> v2, tuned by DPO on the feedback, gated against v1
"""

import argparse
import concurrent.futures
from collections import Counter

import httpx
from openai import OpenAI

from dataflywheel.data.bbc import corpus_folder
from dataflywheel.data.instructions import PER_TOPIC, prompts, split_article
from dataflywheel.data.simulated_users import react

TOPICS = ["business", "entertainment", "politics", "sports", "tech"]


def questions(per_topic: int, skip: int) -> list[tuple[str, str, str]]:
    """(kind, prompt, true answer) for ``per_topic`` articles per topic after the first ``skip``."""
    out = []
    for folder in sorted(p for p in corpus_folder().iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.txt"))[skip:skip + per_topic]:
            title, body = split_article(path.read_text(encoding="utf-8", errors="replace"))
            asked = prompts(body, TOPICS)
            out += [("headline", asked["headline"], title), ("topic", asked["topic"], folder.name)]
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=40, help="articles per topic")
    parser.add_argument("--url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="assistant")
    parser.add_argument("--clients", type=int, default=8, help="users asking at once")
    args = parser.parse_args()
    client = OpenAI(base_url=args.url, api_key="unused", timeout=600)
    sent: Counter[str] = Counter()

    def ask(question: tuple[str, str, str]) -> str:
        kind, prompt, truth = question
        r = client.chat.completions.create(model=args.model, messages=[{"role": "user", "content": prompt}],
                                           n=2, temperature=0.8, max_tokens=24)
        body = {"completion_id": r.id, **react(kind, truth, [c.message.content or "" for c in r.choices])}
        httpx.post(args.url.removesuffix("/v1") + "/v1/feedback", json=body, timeout=60).raise_for_status()
        return next(k for k in ("thumbs", "rating", "correction", "choice") if k in body)

    asked = questions(args.articles, PER_TOPIC)
    with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
        for kind in pool.map(ask, asked):
            sent[kind] += 1
    print(f"{len(asked)} questions answered and judged: " + ", ".join(f"{k} {n}" for k, n in sent.most_common()))
