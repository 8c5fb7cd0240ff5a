"""The ``pretrained`` builder: a Hugging Face encoder (``AutoModelForSequenceClassification``)
fine-tuned on the text column, in one of three modes (``model.params.finetune``):

- ``full``: every weight trains; the bundle stores every weight.
- ``frozen``: the encoder is frozen, the *head* trains (the classifier, plus the encoder's
  pooler where it has one); the bundle stores the head alone.
- ``lora``: low-rank adapters (peft ``LoraConfig``: ``model.params.lora`` = ``{r, alpha,
  dropout, target_modules}``; peft's default targets, ``query``/``value`` for BERT) plus the
  head train; the bundle stores the adapters and the head alone.

A bundle references its base model portably, by hub name or project-relative path, and by its
content hash (:mod:`~dataflywheel.models.base_model`). The ``frozen`` and ``lora`` bundles rebuild
from the base's weights, so loading them on a base whose hash differs is refused (a
:class:`ModelError` naming both hashes); a ``full`` bundle reads only the base's ``config.json``.
A ``lora`` bundle also holds its adapters in peft's format (``adapter_config.json``,
``adapter_model.safetensors``; :meth:`PretrainedClassifier.write_bundle_files`), so
``peft.PeftModel.from_pretrained(base_model, bundle_folder)`` loads them too. The text encoder
must use the base's own tokenizer: :func:`~dataflywheel.models.base_model.prepare_config` (called
by the training stage) points the text column's ``tokenizer`` at the base folder.

Base weights load from safetensors (``use_safetensors=True``): a base that ships only
pickle-based ``pytorch_model*.bin`` weights is refused unless ``model.params.allow_pickle_weights``
is true (transformers then reads them with ``torch.load(weights_only=True)``).

The module reads a batch's ``tokens`` and ``attention_mask`` (see :mod:`~dataflywheel.features.batch`),
the text alone: a dataset with tabular feature columns is refused at build time (list them in
``data.exclude``) rather than silently ignoring them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from dataflywheel.errors import ModelError
from dataflywheel.features.batch import TEXT, Batch
from dataflywheel.models.base_model import (
    content_hash,
    local_folder,
    open_base,
    prepare_config,
    quiet_transformers,
    resolve_base,
)
from dataflywheel.models.lora import ADAPTER_WEIGHTS, AdaptedBase, BaseModelParams, LoraParams
from dataflywheel.models.mlp import model_task

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

__all__ = ["ADAPTER_WEIGHTS", "LoraParams", "PretrainedClassifier", "PretrainedParams", "build_pretrained",
           "content_hash", "prepare_config", "resolve_base"]

Finetune = Literal["full", "frozen", "lora"]
HEAD_MODULES = ("pooler",)
"""Encoder sub-modules trained with the head in the frozen and lora modes."""


class PretrainedParams(BaseModelParams):
    """``model.params`` of ``model.type: pretrained`` (:class:`~dataflywheel.models.lora.BaseModelParams`)."""

    finetune: Finetune = "lora"



class PretrainedClassifier(AdaptedBase):
    """A batch's ``tokens`` and ``attention_mask`` -> the Hugging Face model's logits (B, n_outputs)."""

    inputs = TEXT

    def forward(self, batch: Batch) -> torch.Tensor:
        tokens, attention_mask = batch.get("tokens"), batch.get("attention_mask")  # (B, T) each
        if tokens is None:
            raise ModelError("a pretrained model needs token ids", fix="pass the text column")
        if tokens.shape[1] > self.max_positions:
            raise ModelError(f"{tokens.shape[1]} tokens exceed the base model's {self.max_positions} positions")
        mask = torch.ones_like(tokens) if attention_mask is None else attention_mask.long()
        logits: torch.Tensor = self.hf(input_ids=tokens, attention_mask=mask).logits  # (B, n_outputs)
        return logits

    def bundle_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights a bundle stores: all of them (full), else the trainable ones alone."""
        if self.merged:
            raise ModelError("this model's LoRA adapters were merged for inference; its adapter weights are gone",
                             fix="save the model before calling for_inference()")
        if self.finetune == "full":
            return self.state_dict()
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def load_bundle_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Take back :meth:`bundle_state_dict`, or the whole state dict (what checkpoints held before
        they kept the trained part alone); another key set is a :class:`ModelError`."""
        if set(state) == set(self.state_dict()):
            self.load_state_dict(state)
            return
        expected = set(self.bundle_state_dict())
        state = _head_keys_as_saved(state, expected)
        self.load_checked(state, expected)


def _head_keys_as_saved(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """LoRA bundles written before the head modules were peft ``modules_to_save`` named their
    weights ``...pooler.dense.weight``; peft now keeps the trained copy at
    ``...pooler.modules_to_save.default.dense.weight``."""
    out = {}
    for key, value in state.items():
        for name in HEAD_MODULES:
            renamed = key.replace(f".{name}.", f".{name}.modules_to_save.default.", 1)
            if key not in expected and renamed in expected:
                key = renamed
                break
        out[key] = value
    return out


def _head_trainable(model: PreTrainedModel) -> None:
    """Freeze the encoder, then unfreeze the classifier and the encoder's HEAD_MODULES."""
    encoder = model.base_model
    for p in encoder.parameters():
        p.requires_grad_(False)
    encoder_ids = {id(p) for p in encoder.parameters()}
    for p in model.parameters():
        if id(p) not in encoder_ids:
            p.requires_grad_(True)
    for name in HEAD_MODULES:
        sub = getattr(encoder, name, None)
        if isinstance(sub, nn.Module):
            sub.requires_grad_(True)


def _with_lora(model: PreTrainedModel, lora: LoraParams | dict[str, Any]) -> PeftModel:
    from peft import LoraConfig, TaskType, get_peft_model

    opts = lora if isinstance(lora, LoraParams) else LoraParams.parse(lora)
    targets = opts.target_modules
    # The head modules train with the adapters as peft modules_to_save (the classifier is one by
    # task type), so peft's adapter files hold them and PeftModel.from_pretrained restores them.
    heads = [name for name in HEAD_MODULES if isinstance(getattr(model.base_model, name, None), nn.Module)]
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=opts.r, lora_alpha=opts.alpha,
                        lora_dropout=float(opts.dropout), target_modules=list(targets) if targets else None,
                        modules_to_save=heads or None)
    try:
        with quiet_transformers():
            peft_model = get_peft_model(model, config)
    except ValueError as exc:
        raise _bad("lora.target_modules", f"peft cannot place adapters ({exc})", targets) from None
    return peft_model


def build_pretrained(
    *,
    n_numeric: int,
    cardinalities: list[int],
    n_outputs: int,
    task: str,
    base_dirs: Sequence[Path] = (),
    **params: Any,
) -> PretrainedClassifier:
    """Load ``base`` for sequence classification with ``n_outputs`` logits and set up
    ``finetune`` (:class:`PretrainedParams`). ``base_hash`` (set by :func:`prepare_config`) must
    match the folder's for the frozen and lora modes. A relative ``base`` is looked up in
    ``base_dirs`` (given by :func:`~dataflywheel.models.registry.build_model`, not stored in the
    spec). Weights load from safetensors; ``allow_pickle_weights`` lets a base with only
    ``pytorch_model*.bin`` load. Bad values raise :class:`ModelError` naming ``model.params.X``."""
    model_task(task)
    p = PretrainedParams.parse(params, model_type="pretrained")
    base, base_hash, finetune = p.base, p.base_hash, p.finetune
    max_length, text_vocab_size = p.max_length, p.text_vocab_size
    if not base:
        raise ModelError("a pretrained model needs a base model", where="model.params.base",
                         fix="set it to a local model folder or a hub name")
    if text_vocab_size is None:
        raise ModelError("a pretrained model reads text, and the data has no text column", where="model.type",
                         fix="give a column type: text in data.features, or use model.type: mlp")
    if n_numeric or cardinalities:
        raise ModelError("a pretrained model reads the text column alone, and the data has other feature columns",
                         where="data", fix="list the non-text feature columns in data.exclude")
    folder, actual, safe = open_base(base, base_hash, finetune, base_dirs, allow_pickle_weights=p.allow_pickle_weights)
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(str(folder), num_labels=n_outputs, local_files_only=True)
            # fp32 whatever the files hold: many bases ship in bf16/fp16, and Adam on half-precision
            # weights loses small updates; train.bf16 gives half-precision compute under autocast.
            hf = AutoModelForSequenceClassification.from_pretrained(str(folder), config=config, local_files_only=True,
                                                                    dtype=torch.float32, use_safetensors=safe)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load the base model ({exc})", where=f"base model {folder}",
                         fix="give a Hugging Face encoder folder (config.json and weights)") from None
    positions = int(getattr(config, "max_position_embeddings", max_length) or max_length)
    if max_length > positions:
        raise ModelError(f"max_length {max_length} exceeds the base model's {positions} positions",
                         where="data.features (text).max_length", fix=f"use at most {positions}")
    vocab = int(getattr(config, "vocab_size", text_vocab_size))
    if text_vocab_size > vocab:
        raise ModelError(f"the tokenizer has {text_vocab_size} tokens, the base model {vocab}",
                         where="data.features (text).tokenizer", fix="use the base model's tokenizer (leave it unset)")
    if finetune == "frozen":
        _head_trainable(hf)
    elif finetune == "lora":
        hf = _with_lora(hf, p.lora or LoraParams())
    named = local_folder(base, base_dirs) is None  # a hub name, found in the Hugging Face cache
    reference = {"name" if named else "path": base, "sha256": actual, "finetune": finetune}
    return PretrainedClassifier(hf, finetune, positions, reference)



def _bad(param: str, message: str, got: object) -> ModelError:
    return ModelError(f"{message} (got {got!r})", where=f"model.params.{param}")
