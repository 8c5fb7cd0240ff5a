"""Chat data for generation: OpenAI-style conversations, checked and split into prompt and completion.

A conversation is a list of ``{"role", "content"}`` messages (role ``system``, ``user`` or
``assistant``, content a string; other keys are ignored) ending with the assistant's answer: that
last turn is the completion, the turns before it the prompt. A prompt of one user turn is kept as
its text; any other (a system turn, earlier exchanges) as the JSON list of its messages, which
:func:`prompt_messages` reads back, so every later stage (redaction, schema, duplicates, leakage)
sees two plain text columns. The first malformed conversation is one :class:`DataError` naming
its file and line (JSON lines: the values are checked as the file holds them, since polars reads
a number among strings as a string) or its row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import polars as pl

from dataflywheel.data.source import ABSENT
from dataflywheel.errors import ConfigError, DataError

if TYPE_CHECKING:
    from dataflywheel.config import FlywheelConfig
    from dataflywheel.data.source import Source

ROLES = ("system", "user", "assistant")
CHAT_COLUMN = "messages"
"""The column OpenAI's chat format keeps a conversation in."""
CHAT_FIX = ("give every row a messages list of {role, content} objects (role system, user or assistant, "
            "content a string) ending with the assistant's answer")

Message = dict[str, str]


def conversation_problem(value: Any) -> str | None:
    """What is wrong with one conversation (as JSON gives it), or None."""
    if value is ABSENT or value is None:
        return "no messages"
    if not isinstance(value, list):
        return f"messages is a {_json_type(value)}, not a list of messages"
    if not value:
        return "messages is empty"
    for i, message in enumerate(value, start=1):
        if not isinstance(message, dict):
            return f"message {i} is a {_json_type(message)}, not an object with role and content"
        role = message.get("role")
        if role is None:
            return f"message {i} has no role"
        if role not in ROLES:
            return f"message {i} has role {role!r}, not one of {', '.join(ROLES)}"
        content = message.get("content")
        if not isinstance(content, str):
            return f"message {i} has {'no' if content is None else 'a ' + _json_type(content)} content, not a string"
    if value[-1]["role"] != "assistant":
        return f"the last message is a {value[-1]['role']} turn; the last turn must be the assistant's answer"
    if len(value) == 1:
        return "no prompt before the assistant's answer"
    return None


def split_conversation(messages: list[dict[str, Any]]) -> tuple[str, str]:
    """``(prompt, completion)`` of a checked conversation (see the module docstring)."""
    turns: list[Message] = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    prompt = turns[0]["content"] if len(turns) == 1 and turns[0]["role"] == "user" else json.dumps(
        turns, ensure_ascii=False)
    return prompt, messages[-1]["content"]


def prompt_messages(prompt: str) -> list[Message]:
    """The messages a stored prompt stands for: a JSON list of ``{role, content}`` messages as
    :func:`split_conversation` writes it, else one user turn holding the text."""
    if prompt.startswith("[{"):
        try:
            value = json.loads(prompt)
        except ValueError:
            value = None
        if isinstance(value, list) and conversation_problem([*value, {"role": "assistant", "content": ""}]) is None:
            return [{"role": m["role"], "content": m["content"]} for m in value]
    return [{"role": "user", "content": prompt}]


def shape_chat(raw: pl.DataFrame, cfg: FlywheelConfig, source: Source) -> pl.DataFrame:
    """``raw`` with its ``messages`` column replaced by the prompt column (``data.prompt``) and
    the target column; the first malformed conversation raises :class:`DataError` naming where."""
    prompt_col, target = cfg.data.prompt_column, cfg.data.target
    if prompt_col in raw.columns:
        raise ConfigError(f"the data has both a {CHAT_COLUMN} column and a {prompt_col!r} column",
                          where="data.prompt", fix="set data.prompt to a name the chat's prompt can take, or drop "
                                                   "one of the columns")
    prompts: list[str] = []
    completions: list[str] = []
    for where, value in _conversations(raw, source):
        if isinstance(value, str):  # a conversation stored as JSON text (a CSV or Parquet export)
            try:
                value = json.loads(value)
            except ValueError:
                pass
        problem = conversation_problem(value)
        if problem is not None:
            raise DataError(f"malformed chat: {problem}", where=where, fix=CHAT_FIX)
        prompt, completion = split_conversation(value)
        prompts.append(prompt)
        completions.append(completion)
    if len(prompts) != raw.height:
        raise DataError(f"{len(prompts)} conversations for {raw.height} rows", where=source.describe(),
                        fix="check that every line is one JSON object")
    if any(p.startswith("[{") for p in prompts):
        _check_json_safe_replacement(cfg)
    column = raw.columns.index(CHAT_COLUMN)
    shaped = raw.drop(CHAT_COLUMN)
    shaped = shaped.insert_column(column, pl.Series(prompt_col, prompts, dtype=pl.String))
    return shaped.insert_column(column + 1, pl.Series(target, completions, dtype=pl.String))


def _conversations(raw: pl.DataFrame, source: Source) -> Iterator[tuple[str, Any]]:
    values: Iterable[tuple[str, Any]] | None = source.raw_values(CHAT_COLUMN)
    if values is None:
        values = ((f"{source.describe()} row {i}", v) for i, v in enumerate(raw[CHAT_COLUMN].to_list(), start=1))
    yield from values


def _check_json_safe_replacement(cfg: FlywheelConfig) -> None:
    """A prompt stored as JSON is redacted as text: a replacement that JSON would escape (a quote,
    a backslash) would break it."""
    privacy = cfg.privacy
    if not privacy.enabled:
        return
    for kind in privacy.kinds:
        try:
            rendered = privacy.replacement.format(kind=kind)
        except (KeyError, IndexError, ValueError):
            return  # an invalid template: the redactor names it
        if json.dumps(rendered, ensure_ascii=False)[1:-1] != rendered:
            raise ConfigError(f"replacement {rendered!r} has characters JSON escapes; chat prompts are kept as "
                              "JSON and redacted as text", where="privacy.replacement",
                              fix="use a placeholder without quotes or backslashes, e.g. '[{kind}]'")


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}
    return names.get(type(value), type(value).__name__)
