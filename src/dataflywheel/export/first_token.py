"""The inference network of a BERT-family sequence classifier: the last layer runs for the first token alone.

A BERT classifier's head reads one position, the first token (``[CLS]``: the pooler takes
``hidden[:, 0]``), yet the stock forward computes the last encoder layer for every token.
Position-wise work (the query projection, attention output, LayerNorm and feed-forward
block) is wasted on every other position; only the keys and values need them all. Computing
the last layer's query, attention and feed-forward for the first token alone gives the same
logits (to float rounding) and saves about 1/6 of a 6-layer encoder's work; MiniLM at 128
tokens runs about 1.2x faster.

:func:`inference_network` applies it where the network is a
:class:`~dataflywheel.models.pretrained.PretrainedClassifier` around a Hugging Face
``BertForSequenceClassification`` (BERT, MiniLM and their copies) with absolute positions, and
returns any other network unchanged. The int8 and ONNX backends run it; the ``torch`` backend
and training keep the Hugging Face forward, the reference the others are compared against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeGuard, cast

import torch
import torch.nn.functional as F
from torch import nn

from dataflywheel.errors import ModelError
from dataflywheel.features.batch import TEXT, Batch

if TYPE_CHECKING:
    from transformers import BertForSequenceClassification
    from transformers.models.bert.modeling_bert import BertLayer, BertSelfAttention


class FirstTokenBert(nn.Module):
    """A batch's ``tokens`` and ``attention_mask`` -> logits over a BERT classifier's own
    modules, computing the last layer for the first token only. Holds no weights of its own."""

    inputs = TEXT

    def __init__(self, hf: BertForSequenceClassification) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, batch: Batch) -> torch.Tensor:
        tokens, attention_mask = batch.get("tokens"), batch.get("attention_mask")
        if tokens is None:
            raise ModelError("a pretrained model needs token ids", fix="pass the text column")
        bert = self.hf.bert
        pooler = bert.pooler
        assert pooler is not None  # supports_first_token checked it
        hidden: torch.Tensor = bert.embeddings(input_ids=tokens)  # (B, T, D)
        mask = torch.ones_like(tokens) if attention_mask is None else attention_mask
        # additive mask (B, 1, 1, T): 0 where a token is kept, the dtype's minimum where padded
        bias = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        # nn.ModuleList is not generic: its items type as Module.
        layers = cast("list[BertLayer]", list(bert.encoder.layer))
        for layer in layers[:-1]:
            hidden = layer(hidden, attention_mask=bias)
        first = self._last_layer(layers[-1], hidden, bias)  # (B, 1, D)
        logits: torch.Tensor = self.hf.classifier(self.hf.dropout(pooler(first)))  # (B, n_outputs)
        return logits

    @staticmethod
    def _last_layer(layer: BertLayer, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # BertAttention.self is BertSelfAttention in an encoder (supports_first_token).
        attn = cast("BertSelfAttention", layer.attention.self)
        batch, length, _ = hidden.shape
        heads, size = attn.num_attention_heads, attn.attention_head_size
        first = hidden[:, :1]
        query = attn.query(first).view(batch, 1, heads, size).transpose(1, 2)
        key = attn.key(hidden).view(batch, length, heads, size).transpose(1, 2)
        value = attn.value(hidden).view(batch, length, heads, size).transpose(1, 2)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=attn.scaling)
        context = context.transpose(1, 2).reshape(batch, 1, heads * size)
        attended: torch.Tensor = layer.attention.output(context, first)  # dense, dropout, LayerNorm(x + first)
        out: torch.Tensor = layer.output(layer.intermediate(attended), attended)  # (B, 1, D)
        return out


def supports_first_token(hf: nn.Module) -> TypeGuard[BertForSequenceClassification]:
    """Whether ``hf`` is a BERT sequence classifier this rewrite reproduces exactly: a pooler
    over the first token, encoder-only self-attention, absolute positions."""
    from transformers import BertForSequenceClassification

    if not isinstance(hf, BertForSequenceClassification) or hf.bert.pooler is None:
        return False
    config = hf.config
    return (not getattr(config, "is_decoder", False)
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and not getattr(config, "add_cross_attention", False))


def inference_network(model: nn.Module) -> nn.Module:
    """The network the int8 and ONNX backends run for ``model``: :class:`FirstTokenBert` over a
    supported pretrained classifier's Hugging Face model, else ``model``. A LoRA model counts
    once its adapters are merged (:meth:`PretrainedClassifier.for_inference`, done by
    ``Predictor.load``); unmerged, it is a peft model and runs unchanged."""
    from dataflywheel.models.pretrained import PretrainedClassifier

    if not isinstance(model, PretrainedClassifier) or not supports_first_token(model.hf):
        return model
    return FirstTokenBert(model.hf).eval()
