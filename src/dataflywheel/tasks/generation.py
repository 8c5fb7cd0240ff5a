"""Generation: a completion learned for a prompt (supervised fine-tuning of a causal language model).

The data is a prompt column (``data.prompt``, default ``prompt``) and a completion column
(``data.target``), or OpenAI-style chat data split into those two at ingestion
(:mod:`dataflywheel.data.chat`). Both are text whatever inference would say; PII is redacted
from both; a duplicate is a prompt seen before (it keeps its first completion), so the leakage
check, which compares the feature columns, counts prompts shared between splits.

The prompt column is read by the chat encoder (:class:`~dataflywheel.features.chat.ChatEncoder`),
which also tokenises the completion and produces the batch input ``labels``: -100 on every
prompt position, the completion's tokens (its end-of-turn token included) elsewhere. A model of
this task reads ``labels`` (``causal_lm``) and returns, per row, the summed negative
log-likelihood of the completion's tokens and their count, ``(B, 2)``; the ``sft`` objective is
their ratio, the token-level cross-entropy. The target tensor is a placeholder of one zero per
row: the completion travels as ``labels``.

Metrics on the test split: ``loss`` (mean negative log-likelihood per completion token, in nats)
and ``perplexity`` (its exponential, the primary metric; lower is better), with the token and
row counts they were computed on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import polars as pl

from dataflywheel.errors import ModelError, SchemaError
from dataflywheel.tasks.base import Decoded, Task

if TYPE_CHECKING:
    from dataflywheel.config import DataConfig, FeatureType, FlywheelConfig
    from dataflywheel.data.source import Source
    from dataflywheel.features.target import TargetEncoder


class GenerationTask(Task):
    name = "generation"
    loss = "sft"
    metrics: ClassVar[dict[str, bool]] = {"perplexity": False, "loss": False, "rouge_l": True, "exact_match": True,
                                          "preference_accuracy": True, "win_rate": True}
    unbounded = frozenset({"perplexity", "loss"})
    guards = ("rouge_l",)
    headline = ("loss", "perplexity", "rouge_l", "exact_match")
    live_metric = "exact_match"
    target_state = ()
    has_classes = False
    outputs_expected = "2 (summed completion-token NLL and token count per row)"
    reads_prompt = True
    redacts_target = True
    requires_reads = ("labels",)
    explainable = False
    compares_base = True
    serving = "generation"

    # -- the data -----------------------------------------------------------------------------

    def shape_frame(self, raw: pl.DataFrame, cfg: FlywheelConfig, source: Source) -> pl.DataFrame:
        """Chat data (a ``messages`` column and no target column) split into prompt and target;
        then the prompt column must be there."""
        from dataflywheel.data.chat import CHAT_COLUMN, shape_chat

        if CHAT_COLUMN in raw.columns and cfg.data.target not in raw.columns:
            raw = shape_chat(raw, cfg, source)
        prompt = cfg.data.prompt_column
        if prompt not in raw.columns:
            raise SchemaError(f"no prompt column {prompt!r} in {source.describe()}", where="data.prompt",
                              fix=f"set data.prompt to the column holding the prompts (columns: "
                                  f"{', '.join(raw.columns[:8])}), or give chat data a messages column")
        return raw

    def column_types(self, cfg: DataConfig) -> dict[str, FeatureType]:
        return {cfg.prompt_column: "text", cfg.target: "text"}

    def duplicate_columns(self, cfg: DataConfig) -> list[str] | None:
        return [cfg.prompt_column]

    def text_params(self, cfg: DataConfig) -> dict[str, Any]:
        return {"encoder": "chat", "completion": cfg.target}

    # -- the target ---------------------------------------------------------------------------

    def fit_target(self, enc: TargetEncoder, series: pl.Series) -> None:
        """Nothing to fit: the completion is tokenised with the prompt, by the chat encoder."""

    def encode_target(self, enc: TargetEncoder, series: pl.Series) -> np.ndarray:
        return np.zeros(len(series), dtype=np.float32)

    def decode_target(self, enc: TargetEncoder, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=object)

    def true_values(self, enc: TargetEncoder, series: pl.Series) -> np.ndarray:
        """The reference completions, as text."""
        return np.asarray(series.cast(pl.String).to_list(), dtype=object)

    # -- model and training -------------------------------------------------------------------

    def n_outputs(self, enc: TargetEncoder) -> int:
        return 2

    def outputs_ok(self, n_outputs: int) -> bool:
        return n_outputs == 2

    # -- prediction ---------------------------------------------------------------------------

    def activate(self, logits: np.ndarray) -> np.ndarray:
        """Per row ``(summed NLL, tokens)`` as the model returns them."""
        return np.asarray(logits, dtype=np.float64).reshape(-1, 2)

    def decode(self, enc: TargetEncoder, scores: np.ndarray, threshold: float) -> Decoded:
        raise ModelError("a generation model writes answers, it does not predict labels",
                         fix="use model.generate(prompts) in Python, flywheel generate, flywheel predict on a "
                             "file of prompts, or flywheel serve (OpenAI-compatible)")

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, y_true: Any, scores: Any, class_names: list[str] | None, threshold: float) -> dict[str, Any]:
        """Token-level loss and perplexity over every row; rows left out of the loss (their
        prompt over ``max_length`` under ``truncate: reject``) are counted as ``rows_left_out``."""
        s = np.asarray(scores, dtype=np.float64).reshape(-1, 2)
        tokens = float(s[:, 1].sum())
        loss = float(s[:, 0].sum() / tokens) if tokens else None
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 700.0)) if loss is not None else None,
            "tokens": int(tokens),
            "n": int((s[:, 1] > 0).sum()),
            "rows_left_out": int((s[:, 1] == 0).sum()),
        }

    def answer_metrics(self, predictor: Any, df: pl.DataFrame, target: str, settings: Any) -> dict[str, Any]:
        """Greedy answers to the first ``settings.answers.max_prompts`` prompts of ``df``, scored
        against the references: ``exact_match`` (the share equal after trimming and case folding:
        the accuracy when the references are labels) and ``rouge_l`` (mean ROUGE-L F1, the
        ``rouge-score`` package), with ``answered`` (how many; prompts a ``truncate: reject``
        model refuses are ``answers_left_out``), a few ``answer_samples`` and ``item_scores`` (each
        answered prompt's ROUGE-L and exact match, in order: what a paired comparison of two models
        on the same prompts resamples, :mod:`~dataflywheel.evaluate.bootstrap`)."""
        from rouge_score import rouge_scorer

        chosen = self._scored_prompts([predictor], df, target, settings)
        if chosen is None:
            return {}
        prompts, refs, left_out = chosen
        if not prompts:
            return {"answered": 0, "answers_left_out": left_out}
        answers = self._answers(predictor, prompts, settings)
        scorer = rouge_scorer.RougeScorer(["rougeL"])
        rouge = [scorer.score(r, a)["rougeL"].fmeasure for r, a in zip(refs, answers, strict=True)]
        exact = [a.strip().casefold() == r.strip().casefold() for r, a in zip(refs, answers, strict=True)]
        return {"rouge_l": float(np.mean(rouge)), "exact_match": float(np.mean(exact)), "answered": len(answers),
                "answers_left_out": left_out,
                "item_scores": {"rouge_l": [round(float(v), 6) for v in rouge],
                                "exact_match": [float(v) for v in exact]},
                "answer_samples": [{"prompt": p, "reference": r, "answer": a}
                                   for p, r, a in list(zip(prompts, refs, answers, strict=True))[:5]]}

    @staticmethod
    def _scored_prompts(predictors: list[Any], df: pl.DataFrame, target: str,
                        settings: Any) -> tuple[list[str], list[str], int] | None:
        """The first ``settings.answers.max_prompts`` prompts of ``df`` that every one of
        ``predictors`` can answer (``truncate: reject`` refuses a prompt too long), their
        references and how many were left out; None when answers are off (or ``df`` is empty)."""
        from dataflywheel.registry.generation import fits

        answers_cfg = getattr(settings, "answers", None)
        n = 32 if answers_cfg is None else answers_cfg.max_prompts
        if n == 0 or df.height == 0:
            return None
        column = next(iter(predictors[0].preprocessor.text_encoders))
        rows = df.head(n)
        prompts = [str(p) for p in rows.get_column(column).to_list()]
        refs = [str(r) for r in rows.get_column(target).to_list()]
        ok = [all(fit) for fit in zip(*(fits(p, prompts) for p in predictors), strict=True)]
        kept = [i for i, fit in enumerate(ok) if fit]
        return [prompts[i] for i in kept], [refs[i] for i in kept], len(prompts) - len(kept)

    @staticmethod
    def _answers(predictor: Any, prompts: list[str], settings: Any) -> list[str]:
        """Greedy answers (the answer cache's, when it has them) on ``settings.answers.threads``."""
        from dataflywheel.registry.generation import cached_answers
        from dataflywheel.runtime import torch_threads

        answers_cfg = getattr(settings, "answers", None)
        with torch_threads(None if answers_cfg is None else answers_cfg.threads):
            return cached_answers(predictor, prompts, 48 if answers_cfg is None else answers_cfg.max_new_tokens)

    def compare_answers(self, challenger: Any, champion: Any, df: pl.DataFrame, target: str,
                        settings: Any) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        """``win_rate`` of each model over the other on the prompts :meth:`answer_metrics` scores
        (their answers come from the answer cache), as ``settings.judge`` decides
        (:mod:`~dataflywheel.evaluate.judges`), and the five prompts where the two answers differ
        most (lowest ROUGE-L between them)."""
        from rouge_score import rouge_scorer

        from dataflywheel.evaluate.judges import make_judge, win_rate

        judge_cfg = getattr(settings, "judge", None)
        chosen = self._scored_prompts([challenger, champion], df, target, settings)
        if judge_cfg is None or chosen is None or not chosen[0]:
            return {}, {}, []
        prompts, refs, _ = chosen
        ours, theirs = self._answers(challenger, prompts, settings), self._answers(champion, prompts, settings)
        scores = make_judge(judge_cfg)(prompts, refs, ours, theirs)
        rate = win_rate(scores)
        scorer = rouge_scorer.RougeScorer(["rougeL"])
        overlap = [scorer.score(a, b)["rougeL"].fmeasure for a, b in zip(ours, theirs, strict=True)]
        order = sorted(range(len(prompts)), key=lambda i: overlap[i])[:5]
        differ = [{"prompt": prompts[i], "reference": refs[i], "challenger": ours[i], "champion": theirs[i],
                   "judged": scores[i], "overlap": overlap[i]} for i in order if overlap[i] < 1.0]
        judged = {"judge": judge_cfg.type, "judged_prompts": len(prompts)}
        return ({"win_rate": rate, **judged}, {"win_rate": None if rate is None else 1.0 - rate, **judged}, differ)

    def pair_metrics(self, predictor: Any, pairs: pl.DataFrame) -> dict[str, Any]:
        """``preference_accuracy``: the share of held-out pairs whose chosen answer the model
        gives a higher log-probability than the rejected one (both whole answers given the
        prompt, as DPO compares them), over ``preference_pairs`` pairs (those with a side too
        long to keep a completion token left out)."""
        from dataflywheel.train.preference import encode_pairs, sequence_logps

        if pairs.height == 0:
            return {}
        pre = predictor.preprocessor
        data = encode_pairs(pre, pairs, next(iter(pre.text_encoders)), predictor.bundle.target_column)
        logps = sequence_logps(predictor.model, data)
        keep = (data.labelled_tokens() > 0).all(dim=1)
        if not bool(keep.any()):
            return {"preference_pairs": 0}
        better = (logps[keep, 0] > logps[keep, 1]).double()
        return {"preference_accuracy": float(better.mean()), "preference_pairs": int(keep.sum())}

    # -- feedback -----------------------------------------------------------------------------

    def next_version(self, cfg: Any, project: Any, parent: Any, log: Any) -> Any:
        """Feedback on completions as SFT rows, preference pairs and good/bad labels
        (:mod:`~dataflywheel.feedback.completion_set`)."""
        from dataflywheel.config.serving import TRAINED_COMPLETION_KINDS
        from dataflywheel.feedback.completion_set import build_completion_version
        from dataflywheel.feedback.trainingset import pending_ids

        return build_completion_version(cfg, project, parent, pending_ids(project, parent.id, TRAINED_COMPLETION_KINDS),
                                        log=log)

    def check_label(self, label: Any, classes: list[str] | None) -> Any:
        from dataflywheel.feedback.completion_feedback import no_label

        raise no_label()

    def check_feedback(self, kind: str, value: Mapping[str, Any], prediction: Any, *,
                       redactor: Any = None) -> dict[str, Any]:
        """Thumbs, a rating, a correction, a choice between the response's choices or a comment
        (:func:`~dataflywheel.feedback.completion_feedback.check_completion_feedback`)."""
        from dataflywheel.feedback.completion_feedback import check_completion_feedback

        return check_completion_feedback(kind, value, prediction, redactor)
