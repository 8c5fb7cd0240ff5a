"""The generation model a server holds: a causal LM, its tokenizer and chat template, its limits.

:class:`ServedGenerator` is immutable once built (a hot swap replaces it whole, as a classifier's
:class:`~dataflywheel.serve.model.ServedModel`): the model in eval mode, the tokenizer (its chat
template renders ``messages``), the ids that end a turn (the template's end-of-turn token and the
end-of-sequence token, from the model's generation config), the context window and the cap on
``max_tokens``. ``redactor`` (the bundle's privacy settings) rewrites PII in prompts before the
model sees them, so neither the log nor a dataset built from it holds raw PII.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataflywheel.privacy import Redactor
from dataflywheel.serve.llm.protocol import Message, OpenAIError


@dataclass(frozen=True)
class ServedGenerator:
    model: Any
    tokenizer: Any
    name: str
    """What ``GET /v1/models`` lists and requests name in ``model``."""
    version: int | None
    context_tokens: int
    """Prompt plus completion tokens at most (the model's position limit)."""
    max_tokens: int = 512
    """The most new tokens a request may ask for (``serve.generation.max_tokens``)."""
    default_max_tokens: int = 256
    """New tokens when a request names no limit (bounded by what the context leaves)."""
    redactor: Redactor | None = None
    stop_ids: tuple[int, ...] | None = None
    """The ids that end a turn; None: the generation config's and the tokenizer's eos ids."""
    aliases: tuple[str, ...] = ()
    """Other names a request may give in ``model`` (the alias served, ``champion``)."""

    @property
    def eos_ids(self) -> list[int]:
        if self.stop_ids is not None:
            return list(self.stop_ids)
        ids: list[int] = []
        for source in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if source is None:
                continue
            ids.extend(source if isinstance(source, list) else [source])
        return list(dict.fromkeys(int(i) for i in ids))

    def redact(self, texts: Sequence[str]) -> tuple[list[str], dict[str, int]]:
        if self.redactor is None:
            return list(texts), {}
        return self.redactor.redact_many(texts)

    def chat_ids(self, messages: Sequence[Message]) -> list[int]:
        """The prompt tokens of ``messages`` through the chat template, ready for the answer."""
        if self.tokenizer.chat_template is None:
            raise OpenAIError(400, f"model {self.name!r} has no chat template: use /v1/completions", param="messages")
        # sanitize_control_tokens: a special token written inside a message is text, as in training
        ids = self.tokenizer.apply_chat_template([m.model_dump() for m in messages], add_generation_prompt=True,
                                                 tokenize=True, return_dict=False, sanitize_control_tokens=True)
        return list(ids["input_ids"] if isinstance(ids, dict) else ids)

    def prompt_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True).input_ids)

    def budget(self, n_prompt: int, asked: int | None, param: str) -> int:
        """The new tokens a request gets: ``asked`` checked against the cap and the context, or
        the default bounded by what the context leaves."""
        if asked is not None and asked > self.max_tokens:
            raise OpenAIError(400, f"{param} is {asked}, above this server's cap of {self.max_tokens} "
                              "(serve.generation.max_tokens)", param=param, code="invalid_value")
        room = self.context_tokens - n_prompt
        wanted = min(self.default_max_tokens, self.max_tokens) if asked is None else asked
        if room < 1 or (asked is not None and asked > room):
            raise OpenAIError(400, f"this model's maximum context length is {self.context_tokens} tokens; "
                              f"the prompt has {n_prompt} and {wanted} more were requested",
                              param="messages", code="context_length_exceeded")
        return min(wanted, room)


def load_generator(folder: str | Path, *, name: str | None = None, version: int | None = None,
                   max_tokens: int = 512, default_max_tokens: int = 256, redactor: Redactor | None = None,
                   dtype: Any = None) -> ServedGenerator:
    """A :class:`ServedGenerator` over an ``AutoModelForCausalLM`` folder (safetensors weights,
    tokenizer, generation config), in eval mode on the CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "auto")
    model.eval()  # type: ignore[no-untyped-call]
    context = int(getattr(model.config, "max_position_embeddings", 2048))
    return ServedGenerator(model, tokenizer, name or path.name, version, context, max_tokens,
                           default_max_tokens, redactor)


def generator_from_predictor(predictor: Any, *, name: str, max_tokens: int = 512, default_max_tokens: int = 256,
                             aliases: tuple[str, ...] = ()) -> ServedGenerator:
    """A :class:`ServedGenerator` over a registered generation model (a ``causal_lm`` bundle):
    LoRA adapters folded into the base weights, the bundle's own tokenizer, chat template and
    end-of-turn ids (its chat encoder's state), the base's position limit, the bundle's redaction."""
    from dataflywheel.errors import ModelError
    from dataflywheel.features.chat import ChatEncoder
    from dataflywheel.models.causal_lm import CausalLM

    model, encoder = predictor.model, getattr(predictor.preprocessor, "text_encoder_", None)
    if not isinstance(model, CausalLM) or not isinstance(encoder, ChatEncoder):
        raise ModelError(f"a {predictor.task} model does not generate text", fix="serve a generation model")
    model.eval()
    hf = model.for_inference().hf
    hf.eval()
    return ServedGenerator(hf, encoder.chat_tokenizer, name, predictor.version, int(model.max_positions),
                           max_tokens, default_max_tokens, predictor.redaction.redactor,
                           tuple(int(i) for i in encoder.stop_ids_), aliases)
