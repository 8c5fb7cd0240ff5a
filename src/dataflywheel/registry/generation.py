"""Answers from a generation model's bundle: prompts in, greedy completions out.

The prompts are redacted as the model's training data was, encoded by the bundle's own chat
encoder (its tokenizer, chat template and generation prompt, from ``preprocessor.json``) and
continued by the model (:class:`~dataflywheel.models.capabilities.Generates`) until an
end-of-turn token or ``max_new_tokens``. Greedy decoding: the same prompts give the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import polars as pl

from dataflywheel.errors import DataError, ModelError

if TYPE_CHECKING:
    from dataflywheel.registry.predictor import Predictor

GENERATE_BATCH = 8
"""Prompts decoded together (left-padded into one batch)."""


def generate(predictor: Predictor, prompts: Sequence[str], *, max_new_tokens: int = 64,
             batch_size: int = GENERATE_BATCH) -> list[str]:
    """The model's greedy answer to each prompt (one user turn, or a JSON list of messages)."""
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
    ids = [list(map(int, out.ids.row(i))) for i in range(len(out.ids))]
    answers: list[str] = []
    for start in range(0, len(ids), batch_size):
        for row in model.generate_ids(ids[start:start + batch_size], max_new_tokens=max_new_tokens,
                                      stop_ids=encoder.stop_ids_, pad_id=encoder.pad_id_):
            answers.append(encoder.decode(row))
    return answers
