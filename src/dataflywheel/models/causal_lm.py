"""The ``causal_lm`` builder: a Hugging Face ``AutoModelForCausalLM`` fine-tuned to write the
completions of a generation task's prompts (``model.params.finetune``):

- ``full``: every weight trains; the bundle stores every weight (safetensors).
- ``lora``: low-rank adapters train (peft ``LoraConfig``: ``model.params.lora`` = ``{r, alpha,
  dropout, target_modules}``; peft's default targets, ``q_proj``/``v_proj`` for Llama); the bundle
  stores the adapters alone, also in peft's format, and references the base by its content hash
  (:mod:`~dataflywheel.models.base_model`), exactly as the ``pretrained`` encoders' bundles do:
  loading it on a base whose hash differs is refused.

The module reads a batch's ``tokens``, ``attention_mask`` and ``labels`` (the chat encoder's,
:mod:`~dataflywheel.features.chat`) and returns per row ``(summed NLL, tokens)`` of the
completion's tokens, ``(B, 2)``: the decoder's hidden states are taken only at the positions whose
next token is labelled, and the vocabulary projection and cross-entropy run on those alone, in
chunks of ``LOGIT_CHUNK`` positions (recomputed in the backward pass), so the ``(B, T, vocab)``
logits are never materialised. The tokenizer, chat template and end-of-turn ids travel in the
bundle's ``preprocessor.json`` (the chat encoder's state), so a loaded bundle can generate
(:meth:`CausalLM.generate_ids`, :func:`~dataflywheel.registry.generation.generate`).

Base weights load from safetensors, in fp32 whatever the files hold (``train.bf16`` gives
half-precision compute under autocast); a base with only pickle-based weights is refused unless
``model.params.allow_pickle_weights``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from dataflywheel.errors import ModelError
from dataflywheel.features.batch import ATTENTION_MASK, LABEL_PAD, LABELS, TOKENS, Batch
from dataflywheel.models.base_model import local_folder, open_base, quiet_transformers
from dataflywheel.models.lora import AdaptedBase, BaseModelParams, LoraParams
from dataflywheel.models.mlp import model_task

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

__all__ = ["CausalLM", "CausalLMParams", "build_causal_lm"]

Finetune = Literal["full", "lora"]
LOGIT_CHUNK = 1024
"""Labelled positions per vocabulary projection: bounds the logits held at once to
``LOGIT_CHUNK x vocab`` floats (200 MB for a 49,152-token vocabulary)."""


class CausalLMParams(BaseModelParams):
    """``model.params`` of ``model.type: causal_lm`` (:class:`~dataflywheel.models.lora.BaseModelParams`)."""

    finetune: Finetune = "lora"


class CausalLM(AdaptedBase):
    """A batch's ``tokens``, ``attention_mask`` and ``labels`` -> per row the summed negative
    log-likelihood of its labelled tokens and their count, ``(B, 2)``."""

    inputs = (TOKENS, ATTENTION_MASK, LABELS)

    def forward(self, batch: Batch) -> torch.Tensor:
        tokens, labels = batch.get(TOKENS), batch.get(LABELS)  # (B, T) each
        if tokens is None or labels is None:
            raise ModelError("a causal_lm model scores completions: it needs the prompt's tokens and labels",
                             fix="encode the prompt column together with its completion (the chat encoder)")
        if tokens.shape[1] > self.max_positions:
            raise ModelError(f"{tokens.shape[1]} tokens exceed the base model's {self.max_positions} positions")
        attention = batch.get(ATTENTION_MASK)
        mask = torch.ones_like(tokens) if attention is None else attention.long()
        decoder = self._base().get_decoder()  # type: ignore[no-untyped-call]  # transformers leaves it unannotated
        hidden: torch.Tensor = decoder(input_ids=tokens, attention_mask=mask, use_cache=False).last_hidden_state
        # hidden: (B, T, H)
        targets = labels[:, 1:]  # (B, T-1): the token each position predicts
        keep = targets != LABEL_PAD  # (B, T-1)
        rows = keep.nonzero()[:, 0]  # (N,)
        nll = self._token_nll(hidden[:, :-1][keep], targets[keep])  # (N,) float32
        sums = torch.zeros(tokens.shape[0], dtype=nll.dtype, device=nll.device).index_add(0, rows, nll)  # (B,)
        counts = torch.bincount(rows, minlength=tokens.shape[0]).to(nll.dtype)  # (B,)
        out = torch.stack([sums, counts], dim=1)  # (B, 2)
        return out

    def _token_nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the next token at each selected position: ``hidden`` (N, H) -> (N,)."""
        head = self._base().get_output_embeddings()  # type: ignore[no-untyped-call]
        if head is None:
            raise ModelError("the base model has no output embeddings (lm_head)")

        def chunk(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = head(h).float()  # (n, vocab)
            return F.cross_entropy(logits, t, reduction="none")

        if hidden.shape[0] <= LOGIT_CHUNK:
            return chunk(hidden, targets)
        from torch.utils.checkpoint import checkpoint

        parts = []
        for start in range(0, hidden.shape[0], LOGIT_CHUNK):
            h, t = hidden[start:start + LOGIT_CHUNK], targets[start:start + LOGIT_CHUNK]
            parts.append(checkpoint(chunk, h, t, use_reentrant=False) if torch.is_grad_enabled() else chunk(h, t))
        return torch.cat(parts)

    def _base(self) -> PreTrainedModel:
        """The transformers model (inside peft's wrapper for an unmerged LoRA model; the adapters
        are injected into its layers)."""
        from peft import PeftModel

        base = self.hf.get_base_model() if isinstance(self.hf, PeftModel) else self.hf
        return cast("PreTrainedModel", base)

    @torch.inference_mode()
    def generate_ids(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, stop_ids: Sequence[int],
                     pad_id: int) -> list[list[int]]:
        """Greedy continuations of ``prompts`` (token ids), each cut before its first end-of-turn
        id; the prompts are left-padded into one batch."""
        from transformers import GenerationConfig

        if not prompts:
            return []
        device = next(self.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)  # (B, T)
        mask = torch.zeros_like(ids)  # (B, T)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt):] = torch.as_tensor(list(prompt), dtype=torch.long)
            mask[i, width - len(prompt):] = 1
        config = GenerationConfig(  # type: ignore[no-untyped-call]  # transformers leaves it unannotated
            max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=list(stop_ids), pad_token_id=pad_id,
            use_cache=True)
        was_training = self.training
        self.eval()
        try:
            with quiet_transformers():
                out = self._generator().generate(input_ids=ids, attention_mask=mask, generation_config=config)
                # out: (B, T + new tokens)
        finally:
            self.train(was_training)
        stops = set(stop_ids)
        answers = []
        for row in out[:, width:].tolist():
            end = next((j for j, t in enumerate(row) if t in stops), len(row))
            answers.append([int(t) for t in row[:end]])
        return answers

    def _generator(self) -> Any:
        """What ``generate`` is called on: the peft model (adapters active) or the transformers model."""
        return self.hf

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each decoder layer's activations in the backward pass (``train.gradient_checkpointing``)."""
        base = self._base()
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        base.config.use_cache = False

    def bundle_state_dict(self) -> dict[str, torch.Tensor]:
        """Every weight (full; tied ones, such as an lm_head sharing the embeddings, as copies, which
        safetensors requires), else the trainable adapters alone."""
        if self.finetune == "full":
            seen: set[int] = set()
            state = {}
            for name, tensor in self.state_dict().items():
                ptr = tensor.untyped_storage().data_ptr()
                state[name] = tensor.clone() if ptr in seen else tensor
                seen.add(ptr)
            return state
        self._peft_model()
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def load_bundle_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Take back :meth:`bundle_state_dict`; another key set is a :class:`ModelError`."""
        expected = set(self.state_dict()) if self.finetune == "full" else set(self.bundle_state_dict())
        self.load_checked(state, expected)


def _with_lora(model: PreTrainedModel, lora: LoraParams) -> PeftModel:
    from peft import LoraConfig, TaskType, get_peft_model

    targets = lora.target_modules
    config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=lora.r, lora_alpha=lora.alpha, lora_dropout=float(lora.dropout),
                        target_modules=list(targets) if targets else None)
    try:
        with quiet_transformers():
            peft_model = get_peft_model(model, config)
    except ValueError as exc:
        raise ModelError(f"peft cannot place adapters ({exc}) (got {targets!r})".splitlines()[0],
                         where="model.params.lora.target_modules") from None
    return peft_model


def build_causal_lm(
    *,
    n_numeric: int,
    cardinalities: list[int],
    n_outputs: int,
    task: str,
    base_dirs: Sequence[Path] = (),
    **params: Any,
) -> CausalLM:
    """Load ``base`` as an ``AutoModelForCausalLM`` and set up ``finetune`` (:class:`CausalLMParams`);
    ``base_hash`` must match the folder's for LoRA. Bad values raise :class:`ModelError` naming
    ``model.params.X``."""
    kind = model_task(task)
    if LABELS not in kind.requires_reads or not kind.outputs_ok(n_outputs):
        raise ModelError(f"a causal_lm model learns completions of prompts; a {task} task has none",
                         where="model.task", fix="set model.task: generation, or use another model type")
    p = CausalLMParams.parse(params, model_type="causal_lm")
    if not p.base:
        raise ModelError("a causal_lm model needs a base model", where="model.params.base",
                         fix="set it to a local AutoModelForCausalLM folder or a hub name in the local cache")
    if p.text_vocab_size is None:
        raise ModelError("a causal_lm model reads the prompt column as text, and the data has none",
                         where="data.prompt", fix="name the prompt column in data.prompt")
    if n_numeric or cardinalities:
        raise ModelError("a causal_lm model reads the prompt column alone, and the data has other feature columns",
                         where="data", fix="list the other columns in data.exclude")
    folder, actual, safe = open_base(p.base, p.base_hash, p.finetune, base_dirs,
                                     allow_pickle_weights=p.allow_pickle_weights)
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
            hf = AutoModelForCausalLM.from_pretrained(str(folder), config=config, local_files_only=True,
                                                      dtype=torch.float32, use_safetensors=safe)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load the base model ({exc})".splitlines()[0], where=f"base model {folder}",
                         fix="give a Hugging Face causal LM folder (config.json and weights)") from None
    positions = int(getattr(config, "max_position_embeddings", p.max_length) or p.max_length)
    if p.max_length > positions:
        raise ModelError(f"max_length {p.max_length} exceeds the base model's {positions} positions",
                         where="data.features (prompt).max_length", fix=f"use at most {positions}")
    vocab = int(cast("nn.Embedding", hf.get_input_embeddings()).num_embeddings)
    if p.text_vocab_size > vocab:
        raise ModelError(f"the tokenizer has {p.text_vocab_size} tokens, the base model {vocab}",
                         where="data.features (prompt).tokenizer",
                         fix="use the base model's tokenizer (leave it unset)")
    model: nn.Module = hf
    if p.finetune == "lora":
        model = _with_lora(hf, p.lora or LoraParams())
    named = local_folder(p.base, base_dirs) is None  # a hub name, found in the Hugging Face cache
    reference = {"name" if named else "path": p.base, "sha256": actual, "finetune": p.finetune}
    return CausalLM(model, p.finetune, positions, reference)
