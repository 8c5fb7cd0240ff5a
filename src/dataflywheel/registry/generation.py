"""Answers from a generation model's bundle: prompts in, greedy completions out.

The prompts are redacted as the model's training data was, encoded by the bundle's own chat
encoder (its tokenizer, chat template and generation prompt, from ``preprocessor.json``) and
continued by the model (:class:`~dataflywheel.models.capabilities.Generates`) until an
end-of-turn token or ``max_new_tokens``. Greedy decoding: the same prompts give the same answers.

:func:`generate` answers a list of prompts (``Predictor.generate``); :func:`stream` writes one
answer piece by piece as it is decoded (``flywheel generate``); :func:`generate_frame` answers a
table's prompts (``flywheel predict`` on a generation model: a prompt column, or chat
``messages``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import polars as pl

from dataflywheel.errors import DataError, ModelError

if TYPE_CHECKING:
    from dataflywheel.registry.predictor import Predictor

GENERATE_BATCH = 8
"""Prompts decoded together (left-padded into one batch)."""


def generate(predictor: Predictor, prompts: Sequence[str], *, max_new_tokens: int = 64,
             batch_size: int = GENERATE_BATCH) -> list[str]:
    """The model's greedy answer to each prompt (one user turn, or a JSON list of messages)."""
    model, encoder, ids = _encoded(predictor, prompts)
    answers: list[str] = []
    for start in range(0, len(ids), batch_size):
        for row in model.generate_ids(ids[start:start + batch_size], max_new_tokens=max_new_tokens,
                                      stop_ids=encoder.stop_ids_, pad_id=encoder.pad_id_):
            answers.append(encoder.decode(row))
    return answers


def fits(predictor: Predictor, prompts: Sequence[str]) -> list[bool]:
    """Whether each prompt fits the model's ``max_length`` (a chat encoder with ``truncate:
    reject`` refuses the others; with ``left`` every prompt fits)."""
    out = []
    for prompt in prompts:
        try:
            _encoded(predictor, [prompt])
        except DataError:
            out.append(False)
        else:
            out.append(True)
    return out


def _encoded(predictor: Predictor, prompts: Sequence[str]) -> tuple[Any, Any, list[list[int]]]:
    """(the model, its chat encoder, each prompt's token ids), the prompts redacted first."""
    from dataflywheel.features.chat import ChatEncoder
    from dataflywheel.models.capabilities import Generates

    model, encoder = predictor.model, predictor.preprocessor.text_encoder_
    if not isinstance(model, Generates) or not isinstance(encoder, ChatEncoder):
        raise ModelError(f"a {predictor.task} model does not generate text", fix="load a generation model")
    column = next(iter(predictor.preprocessor.text_encoders))
    records, _counts = predictor.redact_records([{column: p} for p in prompts])
    out = encoder.encode_columns({column: pl.Series(column, [r[column] for r in records], dtype=pl.String)}, column)
    if out.rejected:
        raise DataError(f"{out.rejected} prompt(s) are longer than max_length ({encoder.max_length} tokens)",
                        where="prompts", fix="shorten them, or train with truncate: left")
    return model, encoder, [list(map(int, out.ids.row(i))) for i in range(len(out.ids))]


def stream(predictor: Predictor, prompt: str, on_text: Callable[[str], object], *, max_new_tokens: int = 256) -> str:
    """The greedy answer to ``prompt``, handed to ``on_text`` piece by piece as it is decoded
    (whole characters: transformers' ``TextStreamer``); returns the whole answer."""
    import torch
    from transformers import TextStreamer

    from dataflywheel.models.causal_lm import CausalLM

    model, encoder, ids = _encoded(predictor, [prompt])
    if not isinstance(model, CausalLM):
        raise ModelError(f"a {type(model).__name__} model does not stream", fix="load a causal_lm model")
    pieces: list[str] = []

    class Pieces(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                pieces.append(text)
                on_text(text)

    model.eval()
    hf: Any = model.for_inference().hf
    device = next(hf.parameters()).device
    streamer = Pieces(encoder.chat_tokenizer, skip_prompt=True, skip_special_tokens=True)
    with torch.inference_mode():
        hf.generate(input_ids=torch.tensor([ids[0]], device=device), max_new_tokens=max_new_tokens, do_sample=False,
                    eos_token_id=list(encoder.stop_ids_), pad_token_id=encoder.pad_id_, streamer=streamer)
    return "".join(pieces)


def generate_frame(predictor: Predictor, frame: pl.DataFrame, *, max_new_tokens: int = 64) -> pl.DataFrame:
    """A ``completion`` column for a table of prompts: the model's prompt column, a ``prompt``
    column, or chat ``messages`` (each a list of ``{role, content}``; the last turn the user's)."""
    import json

    column = next(iter(predictor.preprocessor.text_encoders))
    if column in frame.columns or "prompt" in frame.columns:
        name = column if column in frame.columns else "prompt"
        prompts = [str(v) if v is not None else "" for v in frame[name].to_list()]
    elif "messages" in frame.columns:
        prompts = []
        for i, messages in enumerate(frame["messages"].to_list()):
            if not isinstance(messages, list) or not messages:
                raise DataError(f"row {i + 1}: messages is not a list of {{role, content}} turns", where="messages",
                                fix="give each row a list of messages, the last one the user's")
            turns = [{"role": m["role"], "content": m["content"]} for m in messages]
            single = len(turns) == 1 and turns[0]["role"] == "user"
            prompts.append(turns[0]["content"] if single else json.dumps(turns))
    else:
        raise DataError(f"no prompts: the input has no {column!r}, 'prompt' or 'messages' column", where="input",
                        fix=f"name the prompt column {column!r}, or give chat rows a messages list")
    return pl.DataFrame({"completion": generate(predictor, prompts, max_new_tokens=max_new_tokens)})


def cached_answers(predictor: Predictor, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """:func:`generate`'s answers, kept for a registered version beside the store's bundles
    (``<artifacts>/models/answers/v<N>-<hash of prompts and settings>.json``), so a gate that
    scores the champion on the same prompts with the same decoding does not generate them again.
    Greedy decoding makes the answers a function of the version, the prompts and ``max_new_tokens``.
    A predictor without a version (a challenger under evaluation) keeps them in memory instead."""
    import hashlib
    import json

    from dataflywheel.store.artifacts import atomic_write_text

    key = hashlib.sha256(json.dumps({"prompts": list(prompts), "max_new_tokens": max_new_tokens,
                                     "decoding": "greedy"}).encode()).hexdigest()[:16]
    if predictor.version is None:  # a challenger being evaluated: kept in memory for its gate
        if key not in predictor.answer_memo:
            predictor.answer_memo[key] = generate(predictor, prompts, max_new_tokens=max_new_tokens)
        return list(predictor.answer_memo[key])
    path = predictor.folder.parent / "answers" / f"v{predictor.version}-{key}.json"
    if path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            cached = None  # a damaged cache file is regenerated
        if isinstance(cached, list) and len(cached) == len(prompts) and all(isinstance(a, str) for a in cached):
            return cached
    answers = generate(predictor, prompts, max_new_tokens=max_new_tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(answers))
    return answers
