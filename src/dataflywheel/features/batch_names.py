"""The names of the batch contract (see :mod:`~dataflywheel.features.batch`), without torch:
the registered :class:`InputKey` of each name, and the names of each text column's inputs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from dataflywheel.errors import ModelError

NUMERIC, CATEGORICAL, TOKENS, ATTENTION_MASK = "numeric", "categorical", "tokens", "attention_mask"
LABELS = "labels"
"""Per-token targets aligned with ``tokens`` (a generation model's completion), -100 elsewhere."""
LABEL_PAD = -100
"""The label of a position that takes no part in the loss (a prompt's, padding)."""
TABULAR: tuple[str, ...] = (NUMERIC, CATEGORICAL)
TEXT: tuple[str, ...] = (TOKENS, ATTENTION_MASK)


@dataclass(frozen=True)
class InputKey:
    """A batch name: its element kind, the axes that vary between batches (0 is always the
    batch) and, for a ragged input, the name of the mask its padding produces."""

    name: str
    kind: Literal["float", "long", "bool"]
    dynamic: tuple[int, ...] = (0,)
    mask: str | None = None
    repeats: bool = False
    """Whether a model may read several (``tokens``, ``tokens_1``, ...: one per text column)."""


_KEYS: dict[str, InputKey] = {}


def register_input(key: InputKey) -> None:
    """Make ``key.name`` a batch name; a name can be registered once."""
    if key.name in _KEYS:
        raise ValueError(f"batch input {key.name!r} is already registered")
    _KEYS[key.name] = key


def input_key(name: str) -> InputKey:
    """The registered key of ``name``; ``tokens_1``, ``attention_mask_1``, ... (the inputs of a
    second, third text column) are their base name's, numbered (:func:`text_names`)."""
    if name in _KEYS:
        return _KEYS[name]
    base, _, number = name.rpartition("_")
    if number.isdigit() and base in _KEYS and _KEYS[base].repeats:
        key = _KEYS[base]
        mask = None if key.mask is None else f"{key.mask}_{number}"
        return InputKey(name, key.kind, key.dynamic, mask, repeats=False)
    raise ModelError(f"unknown batch input {name!r}", fix=f"use one of {sorted(_KEYS)} or register it")


def text_names(i: int) -> tuple[str, str]:
    """The batch names of the ``i``-th text column (from 0): its token ids and their mask,
    ``tokens``/``attention_mask`` for the first, ``tokens_1``/``attention_mask_1`` next, ..."""
    return (TOKENS, ATTENTION_MASK) if i == 0 else (f"{TOKENS}_{i}", f"{ATTENTION_MASK}_{i}")


register_input(InputKey(NUMERIC, "float"))
register_input(InputKey(CATEGORICAL, "long"))
register_input(InputKey(TOKENS, "long", dynamic=(0, 1), mask=ATTENTION_MASK, repeats=True))
register_input(InputKey(ATTENTION_MASK, "bool", dynamic=(0, 1), repeats=True))
register_input(InputKey(LABELS, "long", dynamic=(0, 1)))


def check_reads(reads: Iterable[str], produced: Iterable[str], where: str = "model") -> None:
    """A :class:`ModelError` when a model reads a name the data does not provide."""
    missing = [n for n in reads if n not in set(produced)]
    if missing:
        raise ModelError(f"the model reads {missing}, which the encoded data does not have (it has "
                         f"{sorted(set(produced))})", where=where,
                         fix="give the data the column type the model reads (e.g. a text column for tokens)")


def sources(reads: Sequence[str]) -> list[str]:
    """The host-side names behind the batch names ``reads``: a mask comes with its ragged input."""
    masks = {input_key(n).mask for n in reads} - {None}
    return [n for n in reads if n not in masks]
