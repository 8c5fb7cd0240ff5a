"""The kinds of text encoder, by name: how a text column's parameters (``encoder``, default
``text``) and a saved encoder's ``encoder`` field pick its class.

``text`` is the :class:`~dataflywheel.features.text.TextEncoder` (a trained WordPiece or a local
fast tokenizer); ``chat`` the :class:`~dataflywheel.features.chat.ChatEncoder` (a generation
prompt and its completion through a causal LM's chat template). A kind is added by one
:func:`register_text_encoder` call; a name is registered once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dataflywheel.errors import ConfigError, ModelError
from dataflywheel.features.chat import ChatEncoder
from dataflywheel.features.text import TextEncoder

_KINDS: dict[str, type[TextEncoder]] = {}


def register_text_encoder(name: str, cls: type[TextEncoder]) -> None:
    """Make ``cls`` the text encoder of ``encoder: name``."""
    if name in _KINDS:
        raise ValueError(f"text encoder {name!r} is already registered")
    _KINDS[name] = cls


def build_text_encoder(params: Mapping[str, Any]) -> TextEncoder:
    """A fresh encoder of the kind ``params["encoder"]`` names (``text`` without), given the rest."""
    kind = str(params.get("encoder", "text"))
    if kind not in _KINDS:
        raise ConfigError(f"unknown text encoder {kind!r}", where="encoder", fix=f"use one of {sorted(_KINDS)}")
    return _KINDS[kind](**{k: v for k, v in params.items() if k != "encoder"})


def text_encoder_from_dict(data: Mapping[str, Any]) -> TextEncoder:
    """A saved encoder (``to_dict``) of the kind its ``encoder`` field names."""
    kind = str(data.get("encoder", "text"))
    if kind not in _KINDS:
        raise ModelError(f"unknown text encoder {kind!r}", where="preprocessor.json",
                         fix="re-train the model with this version of dataflywheel")
    return _KINDS[kind].from_dict(dict(data))


register_text_encoder("text", TextEncoder)
register_text_encoder("chat", ChatEncoder)
