"""Model builders by name.

A builder is ``builder(*, n_numeric, cardinalities, n_outputs, task, **params) -> nn.Module``
whose module declares the batch names it reads (an ``inputs`` tuple, see
:mod:`~dataflywheel.features.batch`) and maps ``forward(batch)`` to logits ``(B, n_outputs)``.
A builder that reads text declares a ``text_vocab_size`` parameter: it then gets
``text_vocab_size`` and ``max_length`` from the first text column's tokenizer and reads
``tokens`` (B, T) long and ``attention_mask`` (B, T) bool (True on real tokens); one that also
declares ``more_text`` reads every text column (``tokens_1``, ... with ``more_text`` giving
their tokenizers' sizes). Builders are added by an explicit :func:`register_model` call
(duplicates are rejected). A *spec* ``{"type": name, "args": {...all builder kwargs...}}`` is what ``model.json``
stores; :func:`build_model` rebuilds the module from it. A builder that reads files named by a
relative path in its spec (a pretrained base model) declares a ``base_dirs`` parameter: it gets
the folders to look such paths up in from :func:`build_model`, never from the spec, so a spec
holds no path of the machine it was written on. A builder registered with a ``params`` class
(:class:`~dataflywheel.models.params.ModelParams`) has every argument but the shape ones checked
against it, in config loading as well as here; one without is checked against its signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dataflywheel.errors import ModelError
from dataflywheel.models.causal_lm import CausalLMParams, build_causal_lm
from dataflywheel.models.mlp import MLPParams, build_mlp
from dataflywheel.models.params import ModelParams
from dataflywheel.models.predict import predict_proba
from dataflywheel.models.pretrained import PretrainedParams, build_pretrained
from dataflywheel.models.transformer import TransformerParams, build_transformer

__all__ = [
    "Builder",
    "available_models",
    "build_model",
    "get_builder",
    "model_spec",
    "params_class",
    "predict_proba",
    "register_model",
    "takes_text",
    "text_columns",
]

Builder = Callable[..., nn.Module]
SHAPE_ARGS = ("n_numeric", "cardinalities", "n_outputs", "task")

_BUILDERS: dict[str, Builder] = {}
_PARAMS: dict[str, type[ModelParams]] = {}


def register_model(name: str, builder: Builder, params: type[ModelParams] | None = None) -> None:
    """Make ``builder`` available as ``model.type: name``; a name can be registered once.
    ``params`` declares what ``model.params`` may hold for it."""
    if name in _BUILDERS:
        raise ValueError(
            f"model type {name!r} is already registered (by {_BUILDERS[name].__module__})"
        )
    _BUILDERS[name] = builder
    if params is not None:
        _PARAMS[name] = params


def params_class(name: str) -> type[ModelParams] | None:
    """The declared parameters of model type ``name`` (None: checked by the builder's signature)."""
    get_builder(name)
    return _PARAMS.get(name)


def available_models() -> list[str]:
    return sorted(_BUILDERS)


def get_builder(name: str) -> Builder:
    try:
        return _BUILDERS[name]
    except KeyError:
        raise ModelError(
            f"unknown model type {name!r}",
            where="model.type",
            fix=f"use one of {available_models()}",
        ) from None


def takes_text(name: str) -> bool:
    """Whether model type ``name`` reads a text column (its params or builder have ``text_vocab_size``)."""
    declared = params_class(name)
    if declared is not None:
        return "text_vocab_size" in declared.model_fields
    return "text_vocab_size" in inspect.signature(get_builder(name)).parameters


def text_columns(name: str) -> int | None:
    """How many text columns model type ``name`` reads: 0, 1, or None for any number (its
    params declare ``more_text``, the second and later columns' tokenizer sizes)."""
    if not takes_text(name):
        return 0
    declared = params_class(name)
    return None if declared is not None and "more_text" in declared.model_fields else 1


def model_spec(name: str, **kwargs: Any) -> dict[str, Any]:
    """The JSON-able spec for ``build_model``; checks the name and the parameter names now."""
    _check_params(name, get_builder(name), kwargs)
    return {"type": name, "args": dict(kwargs)}


def build_model(spec: dict[str, Any], *, seed: int | None = None, base_dirs: Sequence[Path] = ()) -> nn.Module:
    """Build the module a spec describes; with ``seed``, initialise deterministically
    without touching the global torch RNG. ``base_dirs``: where a builder that declares the
    parameter looks relative paths of its spec up (first match wins)."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ModelError('a model spec must be {"type": NAME, "args": {...}}', where="model.json")
    name, args = spec["type"], dict(spec.get("args") or {})
    builder = get_builder(name)
    _check_params(name, builder, args)
    if "base_dirs" in inspect.signature(builder).parameters:
        args["base_dirs"] = [Path(d) for d in base_dirs]
    if seed is None:
        return builder(**args)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder(**args)


def _check_params(name: str, builder: Builder, args: dict[str, Any]) -> None:
    missing = [a for a in SHAPE_ARGS if a not in args]
    if missing:
        raise ModelError(
            f"model spec lacks {missing}", where="model.json", fix="rebuild it with model_spec()"
        )
    params = inspect.signature(builder).parameters
    if "base_dirs" in args:
        raise ModelError("base_dirs is given where the model is built, not in its spec", where="model.params.base_dirs",
                         fix="remove it; a relative base path is read relative to flywheel.yaml's folder")
    declared = _PARAMS.get(name)
    if declared is not None:
        declared.parse({k: v for k, v in args.items() if k not in SHAPE_ARGS}, model_type=name)
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in args:
        if key not in params:
            known = sorted(k for k in params if k not in (*SHAPE_ARGS, "base_dirs"))
            raise ModelError(
                f"unknown parameter for model type {name!r}",
                where=f"model.params.{key}",
                fix=f"use one of {known}",
            )


register_model("mlp", build_mlp, MLPParams)
register_model("transformer", build_transformer, TransformerParams)
register_model("pretrained", build_pretrained, PretrainedParams)
register_model("causal_lm", build_causal_lm, CausalLMParams)
