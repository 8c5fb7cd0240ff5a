"""Simulated users for the assistant example: they know the true answer (an article's real title,
its topic) and react to a response of ``n`` choices as a person would, through the feedback kinds
of the completion API.

- A topic question: every choice names the right topic -> thumbs up on the first; one does ->
  a choice of it; none does -> a correction (the topic).
- A headline: the best choice is close to the real title (ROUGE-L F1 >= ``good``) -> a rating of
  5 on it; the choices differ clearly (by ``margin``) -> a choice of the closer one; else -> a
  correction (the real title).

:func:`react` is the decision, a feedback body without the completion id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def names_topic(answer: str, topic: str) -> bool:
    """Whether ``answer`` names ``topic`` in its first words (``sport`` also reads ``sports``)."""
    head = answer.strip().lower()[:40]
    return topic.lower().rstrip("s") in head


def react(kind: str, truth: str, answers: Sequence[str], *, good: float = 0.5, margin: float = 0.2) -> dict[str, Any]:
    """The feedback a user who knows ``truth`` gives on ``answers`` (the choices of one response)
    to a ``headline`` or ``topic`` question."""
    if kind == "topic":
        right = [i for i, a in enumerate(answers) if names_topic(a, truth)]
        if len(right) == len(answers):
            return {"thumbs": "up", "choice_index": 0}
        if right:
            return {"choice": right[0]} if len(answers) > 1 else {"thumbs": "up", "choice_index": 0}
        return {"correction": truth, "choice_index": 0}
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    scores = [scorer.score(truth, a)["rougeL"].fmeasure for a in answers]
    best = max(range(len(answers)), key=lambda i: scores[i])
    if scores[best] >= good:
        return {"rating": 5, "choice_index": best}
    if len(answers) > 1 and scores[best] - min(scores) >= margin:
        return {"choice": best}
    return {"correction": truth, "choice_index": 0}
