"""Per-prediction explanations: Integrated Gradients (Captum) over a model's encoded inputs.

One path integral covers every input of a record at once, so the attributions of a record add
up to the change of the explained output between the baseline and the record (IG's
completeness; ``convergence_delta`` is what is left over):

- numeric columns (z-scored numbers, binaries, one-hot categories, datetime parts): the
  encoded value itself, from a baseline of zeros, i.e. the training mean of a z-scored number;
- index-encoded categories: the embedding output (``CategoricalEmbedding``), from each
  table's mean row, summed per column;
- text: the token embedding output, from a baseline where every non-special token is the
  padding token (its special tokens, such as [CLS] and [SEP], are kept and so score zero); each
  text column has its own, and its token items name their ``column``.

The inputs come from the batch names the model reads (:func:`~dataflywheel.features.batch.model_reads`):
a float input is attributed as it is, a long one at the output of the embedding the model names
for it (:class:`~dataflywheel.models.capabilities.EmbedsInputs`).

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
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from dataflywheel.errors import ConfigError, DataError, ModelError
from dataflywheel.features.batch import CATEGORICAL, TOKENS, Batch, input_key, model_reads, sources, text_names
from dataflywheel.features.ragged import Ragged
from dataflywheel.models.capabilities import EmbedsInputs
from dataflywheel.models.predict import as_batch
from dataflywheel.tasks import get_task

if TYPE_CHECKING:
    from dataflywheel.features.preprocessor import Preprocessor
    from dataflywheel.registry.predictor import Predictor


@runtime_checkable
class HasInputEmbeddings(Protocol):
    """A Hugging Face model: its token embedding layer."""

    def get_input_embeddings(self) -> nn.Module: ...

TABULAR_BATCH = 256
"""Tabular records per attribution pass (each pass runs the model on records x steps rows)."""
Explanation = dict[str, Any]
"""``{prediction, target_class, explained, output, baseline_output, attributions: [{feature |
token, value, attribution, column}], convergence_delta}``; JSON-safe."""


@dataclass
class _Path:
    """Where one batch input enters the integration path: the input tensor itself (``layer``
    None: a float block, from a zero baseline), or the output of the model's embedding layer
    for it (a long input), from ``base``."""

    name: str
    start: torch.Tensor
    base: torch.Tensor
    layer: nn.Module | None = None


def explain_records(predictor: Predictor, records: Sequence[Mapping[str, Any]], steps: int = 32) -> list[Explanation]:
    """One explanation per record, for the class the predictor predicts (see the module doc).

    ``predictor`` is a loaded :class:`~dataflywheel.registry.predictor.Predictor`; records are
    dicts of raw feature values (text columns hold raw text), redacted of PII by the predictor
    as for a prediction, so what is explained is what the model is given. ``steps`` is the
    number of points on the integration path: more is slower and closer to exact.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"must be a positive integer (got {steps!r})", where="--steps")
    if not records:
        raise DataError("no records to explain", fix="pass at least one record")
    records = predictor.redact_records(records)[0]
    model = private_copy(predictor.model).eval()
    encoded = predictor.preprocessor.transform_records(records)
    groups = _feature_groups(predictor.preprocessor)
    if not encoded.texts:
        batch = as_batch(model, encoded.inputs)
        return [e for i in range(0, len(records), TABULAR_BATCH) for e in _explain(
            predictor, model, {k: v[i : i + TABULAR_BATCH] for k, v in batch.items()},
            records[i : i + TABULAR_BATCH], groups, steps, {})]
    tokenizers = {text_names(i)[0]: _Tokens(column, enc.tokenizer_json_, enc.pad_id_)
                  for i, (column, enc) in enumerate(predictor.preprocessor.text_encoders.items())}
    out: list[Explanation] = []
    for i in range(len(records)):  # one text at a time: no padding enters the path
        one = {k: v.take(np.array([i])) if isinstance(v, Ragged) else v[i : i + 1]
               for k, v in encoded.inputs.items()}
        out += _explain(predictor, model, as_batch(model, one, pad_id=predictor.preprocessor.pad_ids_),
                        records[i : i + 1], groups, steps, tokenizers)
    return out


def _paths(model: nn.Module, batch: Batch, tokenizers: Mapping[str, _Tokens]) -> list[_Path]:
    """One :class:`_Path` per input the model reads that has something to attribute (a mask
    has not; a 0-wide block neither)."""
    paths: list[_Path] = []
    for name in sources(model_reads(model)):
        value = batch[name]
        if value.shape[-1] == 0:
            continue
        if input_key(name).kind == "float":
            paths.append(_Path(name, value, torch.zeros_like(value)))
            continue
        layer = _embedding_layer(model, name)
        with torch.no_grad():
            start = layer(value)
            if name == CATEGORICAL:
                base = _mean_embedding(layer).expand_as(start)  # (B, n_cat * dim)
            elif name in tokenizers:
                base = layer(tokenizers[name].baseline(value))  # (B, T, C)
            else:
                raise ModelError(f"cannot explain the {name!r} input", fix="explain a model over tables or text")
        paths.append(_Path(name, start, base, layer))
    return paths


def _explain(predictor: Predictor, model: nn.Module, batch: Batch, records: Sequence[Mapping[str, Any]],
             groups: list[tuple[str, str, slice]], steps: int, tokenizers: Mapping[str, _Tokens]) -> list[Explanation]:
    from captum.attr import IntegratedGradients

    task = get_task(predictor.task)
    with torch.no_grad():
        logits = model(batch)
    target = task.explain_class(logits, predictor.threshold)  # (B,)
    scale, offset = task.explain_scale(predictor.target)  # e.g. a standardised target back to its units
    paths = _paths(model, batch, tokenizers)
    layers = [p.layer for p in paths if p.layer is not None]

    names = list(batch)  # the batch rides along as extra arguments: Captum repeats them per step

    def explained(*args: torch.Tensor) -> torch.Tensor:
        values, fixed, cls = args[: len(paths)], args[len(paths) : -1], args[-1]
        given = dict(zip(names, fixed, strict=True))
        given |= {p.name: v for p, v in zip(paths, values, strict=True) if p.layer is None}
        with _substituted(layers, [v for p, v in zip(paths, values, strict=True) if p.layer is not None]):
            out = model(given)
        return task.explain_score(out, cls) * scale + offset  # (N,)

    starts, bases = tuple(p.start for p in paths), tuple(p.base for p in paths)
    ig = IntegratedGradients(explained)
    attributions, delta = ig.attribute(starts, baselines=bases, n_steps=steps, return_convergence_delta=True,
                                       additional_forward_args=(*batch.values(), target))
    with torch.no_grad():
        output = explained(*starts, *batch.values(), target)
        base_out = explained(*bases, *batch.values(), target)
    per: dict[str, torch.Tensor] = {}
    for p, attr in zip(paths, attributions, strict=True):
        attr = attr.detach()
        if p.name == CATEGORICAL:
            per[p.name] = _sum_per_column(attr, batch[CATEGORICAL].shape[1])  # (B, n_cat)
        elif p.name in tokenizers:
            per[p.name] = attr.sum(dim=-1)  # (B, T)
        else:
            per[p.name] = attr  # (B, width)

    labels = [_json_value(v) for v in task.explain_answers(predictor.target, target.cpu().numpy(),
                                                             logits.detach().cpu().numpy())]
    out: list[Explanation] = []
    for i, record in enumerate(records):
        items: list[dict[str, Any]] = []
        for name, tokenizer in tokenizers.items():
            if name not in per:
                continue
            ids = batch[name][i].tolist()
            items += [{"token": tokenizer.text(t), "value": int(t), "attribution": _num(a),
                       "column": tokenizer.column} for t, a in zip(ids, per[name][i].tolist(), strict=True)]
        for column, block, where in groups:
            source = per.get(block)
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


def _embedding_layer(model: nn.Module, name: str) -> nn.Module:
    """The module whose output stands for the long input ``name`` on the integration path: the
    model's own (:class:`~dataflywheel.models.capabilities.EmbedsInputs`), else the one
    ``CategoricalEmbedding`` for categories or the token embedding (``tok_emb``, or a wrapped
    Hugging Face model's input embeddings) for tokens."""
    from dataflywheel.models.mlp import CategoricalEmbedding

    if isinstance(model, EmbedsInputs):
        layer = model.input_embedding(name)
        if layer is not None:
            return layer
    if name == CATEGORICAL:
        found = [m for m in model.modules() if isinstance(m, CategoricalEmbedding) and len(m.tables)]
        if len(found) == 1:
            return found[0]
        raise ModelError(f"cannot explain the categorical inputs of a {type(model).__name__}",
                         fix="embed categories with one CategoricalEmbedding, or encode them one-hot")
    layer = getattr(model, "tok_emb", None)
    hf = getattr(model, "hf", None)
    if layer is None and isinstance(hf, HasInputEmbeddings):
        layer = hf.get_input_embeddings()
    if name == TOKENS and isinstance(layer, nn.Embedding):  # a second text column's: input_embedding
        return layer
    raise ModelError(f"cannot find the embedding layer of the {name!r} input of a {type(model).__name__}",
                     fix="give the model an input_embedding(name) method")


def _mean_embedding(layer: nn.Module) -> torch.Tensor:
    """(1, n_cat * dim): each table's mean row, the categorical counterpart of a zero z-score."""
    with torch.no_grad():
        return torch.cat([w.mean(dim=0) for w in layer.get_submodule("tables").parameters()])[None, :]


def _sum_per_column(attr: torch.Tensor, n_cat: int) -> torch.Tensor:
    """(B, n_cat * dim) -> (B, n_cat): one value per categorical column."""
    return attr.reshape(attr.shape[0], n_cat, -1).sum(dim=2)


def _feature_groups(pre: Preprocessor) -> list[tuple[str, str, slice]]:
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

    def __init__(self, column: str, tokenizer_json: str, pad_id: int) -> None:
        from tokenizers import Tokenizer

        self.column = column
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
