"""The chat encoder: a generation prompt (and its completion) through a causal LM's chat template.

:class:`ChatEncoder` is the text encoder of a generation model's prompt column (the generation
task asks for it, :meth:`~dataflywheel.tasks.Task.text_params`). ``fit`` loads the base model's
tokenizer (``tokenizer``: its folder) and keeps what encoding needs as JSON state: the tokenizer
itself, its special tokens, the chat template and the end-of-turn ids (the
``generation_config.json`` ``eos_token_id``, else the tokenizer's eos), so a bundle's
``preprocessor.json`` encodes prompts, and knows where a generated answer ends, without the base.

A prompt (one user turn, or a JSON list of messages, :func:`~dataflywheel.data.chat.prompt_messages`)
is rendered with ``add_generation_prompt``; with its completion (the ``completion`` column, when
the batch holds it) the conversation is rendered with the completion as the assistant's turn and
cut after that turn's end-of-turn token. Both go through ``apply_chat_template`` with
``sanitize_control_tokens``, so a special token written inside a message is text, not control.
The row's ``tokens`` are the prompt's then the completion's ids; its ``labels`` are -100 on every
prompt position and the completion's ids (the end-of-turn token included) on the rest: the loss
is on the completion alone and teaches the model to stop. (Should a tokenizer merge tokens across
the boundary, so that the conversation does not start with the prompt's ids, the conversation's
own ids are used and the loss starts where they part.)

``max_length`` bounds prompt plus completion. Longer rows follow ``truncate``: ``left`` (the
default) drops the prompt's first tokens, keeping the completion whole (a completion that alone
leaves no room for a prompt token is cut on the right); ``reject`` leaves the row out of the loss
(its tokens become one end-of-turn token, its labels -100) and counts it, so the rows of a split
stay aligned with its target. Both are counted (``truncated``, ``rejected``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import polars as pl

from dataflywheel.errors import ConfigError, DataError, ModelError
from dataflywheel.features.batch_names import LABEL_PAD, LABELS
from dataflywheel.features.ragged import Ragged
from dataflywheel.features.text import TextEncoder, TextEncoding

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TRUNCATE = ("auto", "left", "reject")


class ChatEncoder(TextEncoder):
    """Tokenise a prompt column (and its completion) with a causal LM's tokenizer and chat template."""

    name = "chat"
    _state: ClassVar[tuple[str, ...]] = ("tokenizer_json_", "vocab_size_", "pad_id_", "special_tokens_",
                                         "chat_template_", "stop_ids_")
    extra_produces: ClassVar[tuple[str, ...]] = (LABELS,)

    def __init__(self, max_length: int = 128, vocab_size: int = 8000, tokenizer: str | None = None,
                 truncate: str = "auto", completion: str | None = None) -> None:
        """``vocab_size`` is unused (the vocabulary is the base's); ``completion``: the column
        whose value is the prompt's answer (the target)."""
        super().__init__(max_length, vocab_size, tokenizer, truncate)
        self.completion = completion

    def get_params(self) -> dict[str, Any]:
        return {**super().get_params(), "truncate": self.truncate, "completion": self.completion}

    @property
    def also_reads(self) -> tuple[str, ...]:
        return () if self.completion is None else (self.completion,)

    @property
    def extra_pad_ids(self) -> dict[str, int]:
        return {LABELS: LABEL_PAD}

    @property
    def truncate_mode(self) -> str:
        """``left`` or ``reject`` (``auto`` is left)."""
        return "left" if self.truncate == "auto" else self.truncate

    def fit(self, series: pl.Series, base_dir: str | Path | None = None) -> ChatEncoder:
        """Load the base model's tokenizer, its chat template and end-of-turn ids (nothing is
        learned from ``series``)."""
        where = f"data.features ({series.name})"
        if self.max_length < 4:
            raise ConfigError(f"must be >= 4 (got {self.max_length})", where=f"{where}.max_length")
        if self.truncate not in TRUNCATE:
            raise ConfigError(f"a generation prompt is cut from the left or rejected (got {self.truncate!r})",
                              where=f"{where}.truncate", fix="use left (the default) or reject")
        if self.tokenizer is None:
            raise ConfigError("a generation prompt is read with its model's tokenizer", where="model.params.base",
                              fix="set model.params.base to a causal LM folder")
        path = Path(self.tokenizer).expanduser()
        folder = Path(base_dir) / path if base_dir is not None and not path.is_absolute() else path
        tok = _load_tokenizer(folder)
        template = tok.chat_template
        if not isinstance(template, str) or not template.strip():
            raise ModelError("the base model's tokenizer has no chat template", where=f"tokenizer {folder}",
                             fix="add chat_template to its tokenizer_config.json (or a chat_template.jinja)")
        stop_ids = _stop_ids(tok, folder)
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
        backend.no_padding()
        backend.no_truncation()
        self.tokenizer_json_: str = backend.to_str()
        self.vocab_size_: int = backend.get_vocab_size(with_added_tokens=True)
        self.special_tokens_: dict[str, str] = {k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)}
        self.chat_template_: str = template
        self.stop_ids_: list[int] = stop_ids
        pad = tok.pad_token_id
        self.pad_id_: int = int(pad) if isinstance(pad, int) else stop_ids[0]
        self.__dict__.pop("_tok", None)
        self.__dict__.pop("_chat", None)
        return self

    @property
    def chat_tokenizer(self) -> PreTrainedTokenizerBase:
        """The base's tokenizer rebuilt from the state (a ``transformers`` fast tokenizer)."""
        self._check_fitted()
        chat: PreTrainedTokenizerBase | None = self.__dict__.get("_chat")
        if chat is None:
            from tokenizers import Tokenizer
            from transformers import PreTrainedTokenizerFast

            # transformers leaves the fast tokenizer's constructor unannotated.
            chat = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
                tokenizer_object=Tokenizer.from_str(self.tokenizer_json_), chat_template=self.chat_template_,
                **self.special_tokens_)
            self._chat = chat
        return chat

    def render(self, conversations: Sequence[list[dict[str, str]]], *, generation_prompt: bool) -> list[list[int]]:
        """Token ids of each conversation through the chat template (see the module docstring)."""
        if not conversations:
            return []
        ids = self.chat_tokenizer.apply_chat_template(
            list(conversations), add_generation_prompt=generation_prompt, tokenize=True, return_dict=False,
            sanitize_control_tokens=True)
        return [list(map(int, row)) for row in cast("list[list[int]]", ids)]

    def encode(self, series: pl.Series) -> tuple[Ragged, int]:
        """The prompts alone, each ending in the generation prompt: ``(ids, truncated)``."""
        out = self.encode_columns({str(series.name): series}, str(series.name))
        return out.ids, out.truncated

    def encode_columns(self, columns: Mapping[str, pl.Series], column: str) -> TextEncoding:
        """``tokens`` of each prompt, and with the completion column in ``columns`` the prompt
        plus its completion, with ``labels`` (see the module docstring)."""
        from dataflywheel.data.chat import prompt_messages
        from dataflywheel.features.text import _check_text

        values = columns[column].cast(pl.String).to_list()
        _check_text(values, column)
        conversations = [prompt_messages(v or "") for v in values]
        prompts = self.render(conversations, generation_prompt=True)
        answers = columns.get(self.completion) if self.completion is not None else None
        if answers is None:
            return self._prompts_only(prompts)
        completions = answers.cast(pl.String).to_list()
        fulls = self.render([[*c, {"role": "assistant", "content": a or ""}]
                             for c, a in zip(conversations, completions, strict=True)], generation_prompt=False)
        rows: list[list[int]] = []
        labels: list[list[int]] = []
        truncated = rejected = 0
        for i, (prompt, full) in enumerate(zip(prompts, fulls, strict=True)):
            k = _common_prefix(prompt, full)
            answer = full[k:]
            end = next((j for j, t in enumerate(answer) if t in self.stop_ids_), None)
            if end is None:
                raise ModelError("the chat template does not end the assistant's turn with an end-of-turn token "
                                 f"(ids {self.stop_ids_})", where=f"tokenizer {self.tokenizer} (row {i + 1})",
                                 fix="give the base a chat template that closes each turn with its eos token, or "
                                     "set eos_token_id in its generation_config.json")
            head, answer = full[:k], answer[: end + 1]
            if len(head) + len(answer) > self.max_length:
                if self.truncate_mode == "reject":
                    rows.append(self.stop_ids_[:1])
                    labels.append([LABEL_PAD])
                    rejected += 1
                    continue
                truncated += 1
                if len(answer) >= self.max_length:
                    answer = answer[: self.max_length - 1]
                head = head[len(head) - (self.max_length - len(answer)):]
            rows.append(head + answer)
            labels.append([LABEL_PAD] * len(head) + answer)
        return TextEncoding(Ragged.from_lists(rows), truncated, {LABELS: Ragged.from_lists(labels)}, rejected)

    def _prompts_only(self, prompts: list[list[int]]) -> TextEncoding:
        rows: list[list[int]] = []
        truncated = rejected = 0
        for ids in prompts:
            if len(ids) <= self.max_length:
                rows.append(ids)
            elif self.truncate_mode == "reject":
                rows.append(self.stop_ids_[:1])
                rejected += 1
            else:
                rows.append(ids[len(ids) - self.max_length:])
                truncated += 1
        return TextEncoding(Ragged.from_lists(rows), truncated, {}, rejected)

    def decode(self, ids: Sequence[int]) -> str:
        """Generated ids as text, special tokens left out."""
        text = self.chat_tokenizer.decode(list(ids), skip_special_tokens=True)
        return text if isinstance(text, str) else "".join(text)


def _load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    where = f"tokenizer {folder}"
    if not folder.is_dir():
        raise ConfigError("tokenizer folder not found", where=where, fix="give the base model's folder")
    try:
        from transformers import AutoTokenizer

        from dataflywheel.models.base_model import quiet_transformers

        with quiet_transformers():
            tok: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the base model's tokenizer ({exc})".splitlines()[0], where=where,
                         fix="give a folder with tokenizer.json and tokenizer_config.json") from None
    if not getattr(tok, "is_fast", False):
        raise ModelError("the base model's tokenizer is not a fast (tokenizers) one", where=where,
                         fix="add a tokenizer.json to the folder")
    return tok


def _stop_ids(tok: PreTrainedTokenizerBase, folder: Path) -> list[int]:
    """The ids that end an assistant turn: ``generation_config.json``'s ``eos_token_id`` (an id or
    a list), then the tokenizer's eos token."""
    import json

    ids: list[int] = []
    config = folder / "generation_config.json"
    if config.is_file():
        try:
            eos = json.loads(config.read_text(encoding="utf-8")).get("eos_token_id")
        except ValueError:
            raise DataError("not valid JSON", where=str(config), fix="restore the file") from None
        ids += [eos] if isinstance(eos, int) else [i for i in eos or [] if isinstance(i, int)]
    if isinstance(tok.eos_token_id, int):
        ids.append(tok.eos_token_id)
    if not ids:
        raise ModelError("the base model names no end-of-turn (eos) token", where=f"tokenizer {folder}",
                         fix="set eos_token in tokenizer_config.json or eos_token_id in generation_config.json")
    return list(dict.fromkeys(ids))


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
