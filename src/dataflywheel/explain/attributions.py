"""Per-prediction explanations: Integrated Gradients (Captum) over a model's encoded inputs.

One path integral covers every input of a record at once, so the attributions of a record add
up to the change of the explained output between the baseline and the record (IG's
completeness; ``convergence_delta`` is what is left over):

- numeric columns (z-scored numbers, binaries, one-hot categories, datetime parts): the
  encoded value itself, from a baseline of zeros, i.e. the training mean of a z-scored number;
- index-encoded categories: the embedding output (``CategoricalEmbedding``), from each
  table's mean row, summed per column;
- text: the token embedding output, from a baseline where every non-special token is the
  padding token (its special tokens, such as [CLS] and [SEP], are kept and so score zero).

Attributing at an embedding's *output* is Captum's ``LayerIntegratedGradients``; we do it with
a forward hook that substitutes the interpolated embeddings, so that numbers, categories and
tokens share one path and completeness holds for the record as a whole. The hooks go on a
private copy of the model's module tree that shares its parameters and buffers
(:func:`private_copy`): the predictor's own model, which a server may be running predictions
on at the same moment, is never touched, and the copy costs no weight memory.

The explained output is the task's (:meth:`~dataflywheel.tasks.Task.explain_score`): the
predicted class's log-odds (binary), its log-probability (multiclass) or the predicted value in
target units (regression).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from dataflywheel.errors import ConfigError, DataError, ModelError
from dataflywheel.tasks import get_task


@runtime_checkable
class RedactsRecords(Protocol):
    """A predictor that redacts PII from records before they reach the model."""

    def redact_records(self, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]: ...


@runtime_checkable
class HasInputEmbeddings(Protocol):
    """A Hugging Face model: its token embedding layer."""

    def get_input_embeddings(self) -> nn.Module: ...

TABULAR_BATCH = 256
"""Tabular records per attribution pass (each pass runs the model on records x steps rows)."""
Explanation = dict[str, Any]
"""``{prediction, target_class, explained, output, baseline_output, attributions: [{feature |
token, value, attribution}], convergence_delta}``; JSON-safe."""


@dataclass
class _Inputs:
    """One batch of model inputs; ``tokens``/``mask`` only for a text model."""

    numeric: torch.Tensor  # (B, n_numeric) float
    categorical: torch.Tensor  # (B, n_cat) long
    tokens: torch.Tensor | None = None  # (B, T) long
    mask: torch.Tensor | None = None  # (B, T) bool


def explain_records(predictor: Any, records: Sequence[Mapping[str, Any]], steps: int = 32) -> list[Explanation]:
    """One explanation per record, for the class the predictor predicts (see the module doc).

    ``predictor`` is a loaded :class:`~dataflywheel.registry.predictor.Predictor`; records are
    dicts of raw feature values (text columns hold raw text), redacted of PII by the predictor
    as for a prediction, so what is explained is what the model is given. ``steps`` is the
    number of points on the integration path: more is slower and closer to exact.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"must be a positive integer (got {steps!r})", where="--steps")
    records = list(records)
    if not records:
        raise DataError("no records to explain", fix="pass at least one record")
    if isinstance(predictor, RedactsRecords):
        records = predictor.redact_records(records)[0]
    model = private_copy(predictor.model).eval()
    batch = predictor.preprocessor.transform_records(records)
    param = next(model.parameters())
    numeric = torch.as_tensor(batch.numeric, dtype=param.dtype, device=param.device)
    categorical = torch.as_tensor(batch.categorical, dtype=torch.long, device=param.device)
    groups = _feature_groups(predictor.preprocessor)
    if batch.tokens is None:
        return [e for i in range(0, len(records), TABULAR_BATCH) for e in _explain(
            predictor, model, _Inputs(numeric[i : i + TABULAR_BATCH], categorical[i : i + TABULAR_BATCH]),
            records[i : i + TABULAR_BATCH], groups, steps, None)]
    text = predictor.preprocessor.text_encoder_
    tokenizer = _Tokens(text.tokenizer_json_, text.pad_id_)
    out: list[Explanation] = []
    for i in range(len(records)):  # one text at a time: no padding enters the path
        ids = torch.as_tensor(batch.tokens.row(i), dtype=torch.long, device=param.device)[None, :]  # (1, T)
        inputs = _Inputs(numeric[i : i + 1], categorical[i : i + 1], ids, torch.ones_like(ids, dtype=torch.bool))
        out += _explain(predictor, model, inputs, records[i : i + 1], groups, steps, tokenizer)
    return out


def _explain(predictor: Any, model: nn.Module, inputs: _Inputs, records: Sequence[Mapping[str, Any]],
             groups: list[tuple[str, str, slice]], steps: int, tokenizer: _Tokens | None) -> list[Explanation]:
    from captum.attr import IntegratedGradients

    task = get_task(predictor.task)
    cat_layer = _categorical_layer(model) if inputs.categorical.shape[1] else None
    tok_layer = _token_layer(model) if inputs.tokens is not None else None
    layers = [layer for layer in (cat_layer, tok_layer) if layer is not None]
    with torch.no_grad():
        logits = model(inputs.numeric, inputs.categorical, tokens=inputs.tokens, attention_mask=inputs.mask) \
            if inputs.tokens is not None else model(inputs.numeric, inputs.categorical)
    target = task.explain_class(logits, predictor.threshold)  # (B,)
    scale, offset = task.explain_scale(predictor.target)  # e.g. a standardised target back to its units

    has_numeric = inputs.numeric.shape[1] > 0  # a pretrained text model ignores (B, 0) numeric
    starts: list[torch.Tensor] = [inputs.numeric] if has_numeric else []
    bases: list[torch.Tensor] = [torch.zeros_like(inputs.numeric)] if has_numeric else []
    if cat_layer is not None:
        with torch.no_grad():
            starts.append(cat_layer(inputs.categorical))  # (B, n_cat * dim)
            bases.append(_mean_embedding(cat_layer).expand_as(starts[-1]))
    if tok_layer is not None and tokenizer is not None and inputs.tokens is not None:
        with torch.no_grad():
            starts.append(tok_layer(inputs.tokens))  # (B, T, C)
            bases.append(tok_layer(tokenizer.baseline(inputs.tokens)))

    def explained(*args: torch.Tensor) -> torch.Tensor:
        paths, (numeric, categorical, tokens, mask, cls) = args[: len(starts)], args[len(starts):]
        if has_numeric:
            numeric, substitutes = paths[0], paths[1:]
        else:
            substitutes = paths
        with _substituted(layers, substitutes):
            if tokens is not None:
                out = model(numeric, categorical, tokens=tokens, attention_mask=mask)
            else:
                out = model(numeric, categorical)
        return task.explain_score(out, cls) * scale + offset  # (N,)

    fixed = (inputs.numeric, inputs.categorical, inputs.tokens, inputs.mask, target)
    ig = IntegratedGradients(explained)
    attributions, delta = ig.attribute(
        tuple(starts), baselines=tuple(bases), n_steps=steps, return_convergence_delta=True,
        additional_forward_args=fixed,
    )
    with torch.no_grad():
        output = explained(*starts, *fixed)
        base_out = explained(*bases, *fixed)
    per_numeric = attributions[0].detach() if has_numeric else None  # (B, n_numeric)
    per_cat = _sum_per_column(attributions[int(has_numeric)].detach(), inputs.categorical.shape[1]) \
        if cat_layer is not None else None  # (B, n_cat)
    per_token = attributions[-1].detach().sum(dim=-1) if tok_layer is not None else None  # (B, T)

    labels = [_json_value(v) for v in task.explain_answers(predictor.target, target.cpu().numpy(),
                                                             logits.detach().cpu().numpy())]
    out: list[Explanation] = []
    for i, record in enumerate(records):
        items: list[dict[str, Any]] = []
        if per_token is not None and tokenizer is not None and inputs.tokens is not None:
            ids = inputs.tokens[i].tolist()
            items += [{"token": tokenizer.text(t), "value": int(t), "attribution": _num(a)}
                      for t, a in zip(ids, per_token[i].tolist(), strict=True)]
        for column, block, where in groups:
            source = per_numeric if block == "numeric" else per_cat
            if source is None:
                continue
            items.append({"feature": column, "value": _json_value(record.get(column)),
                          "attribution": _num(source[i, where].sum())})
        out.append({
            "prediction": labels[i],
            "target_class": task.class_name(predictor.target, int(target[i])),
            "explained": task.explained,
            "output": _num(output[i]),
            "baseline_output": _num(base_out[i]),
            "attributions": items,
            "convergence_delta": _num(delta[i]),
        })
    return out


def private_copy(model: nn.Module) -> nn.Module:
    """``model``'s module tree copied with its parameters and buffers shared (not copied): hooks
    and mode changes on the copy never reach ``model``, and the weights are not duplicated."""
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo=shared)


@contextmanager
def _substituted(layers: Sequence[nn.Module], outputs: Sequence[torch.Tensor]) -> Iterator[None]:
    """While open, each layer returns the given tensor instead of computing its output."""
    handles = [layer.register_forward_hook(lambda _m, _args, _out, value=value: value)
               for layer, value in zip(layers, outputs, strict=True)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _categorical_layer(model: nn.Module) -> nn.Module:
    from dataflywheel.models.mlp import CategoricalEmbedding

    found = [m for m in model.modules() if isinstance(m, CategoricalEmbedding) and len(m.tables)]
    if len(found) != 1:
        raise ModelError(f"cannot explain the categorical inputs of a {type(model).__name__}",
                         fix="embed categories with one CategoricalEmbedding, or encode them one-hot")
    return found[0]


def _mean_embedding(layer: nn.Module) -> torch.Tensor:
    """(1, n_cat * dim): each table's mean row, the categorical counterpart of a zero z-score."""
    with torch.no_grad():
        return torch.cat([t.weight.mean(dim=0) for t in layer.tables])[None, :]


def _token_layer(model: nn.Module) -> nn.Module:
    layer = getattr(model, "tok_emb", None)
    hf = getattr(model, "hf", None)
    if layer is None and isinstance(hf, HasInputEmbeddings):
        layer = hf.get_input_embeddings()
    if not isinstance(layer, nn.Embedding):
        raise ModelError(f"cannot find the token embedding layer of a {type(model).__name__}",
                         fix="name it tok_emb, or wrap a Hugging Face model as .hf")
    return layer


def _sum_per_column(attr: torch.Tensor, n_cat: int) -> torch.Tensor:
    """(B, n_cat * dim) -> (B, n_cat): one value per categorical column."""
    return attr.reshape(attr.shape[0], n_cat, -1).sum(dim=2)


def _feature_groups(pre: Any) -> list[tuple[str, str, slice]]:
    """(column, "numeric" | "categorical", its slice of that block) per tabular feature, in the
    order the preprocessor lays them out (one-hot and datetime columns span several slots)."""
    groups: list[tuple[str, str, slice]] = []
    n_num = n_cat = 0
    for col, enc in pre.encoders_.items():
        if enc.kind == "categorical":
            groups.append((col, "categorical", slice(n_cat, n_cat + 1)))
            n_cat += 1
        else:
            groups.append((col, "numeric", slice(n_num, n_num + enc.width_)))
            n_num += enc.width_
    return groups


class _Tokens:
    """Token strings, and the padded baseline, from the text encoder's tokenizer."""

    def __init__(self, tokenizer_json: str, pad_id: int) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_str(tokenizer_json)
        self.pad_id = pad_id
        self.tok.no_truncation()
        self.special = set(self.tok.encode("").ids) - {pad_id}  # what the post-processor adds: [CLS], [SEP]

    def text(self, token_id: int) -> str:
        token = self.tok.id_to_token(int(token_id))
        return token if token is not None else f"<{token_id}>"

    def baseline(self, tokens: torch.Tensor) -> torch.Tensor:
        keep = torch.zeros_like(tokens, dtype=torch.bool)
        for i in self.special:
            keep |= tokens == i
        return torch.where(keep, tokens, torch.full_like(tokens, self.pad_id))


def _num(value: Any) -> float | None:
    """A finite Python float (JSON has no NaN or infinity), else None."""
    x = float(value.item() if hasattr(value, "item") else value)
    return x if math.isfinite(x) else None


def _json_value(value: Any) -> Any:
    """A record value as JSON can carry it: finite numbers, strings, booleans or None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, (int, float)):
        return value if isinstance(value, int) or math.isfinite(value) else None
    return str(value)
