"""The ``transformer`` builder: a small BERT-style text encoder written from scratch.

In the nanoGPT manner: token + learned position embeddings, ``n_layer`` pre-norm blocks
(``x + attn(ln(x))``, ``x + mlp(ln(x))``) of multi-head self-attention
(``scaled_dot_product_attention`` with the padding mask: no token attends to padding) and a
GELU MLP, a final LayerNorm, mean pooling over the real tokens and a linear head. Each further
text column has an encoder of its own (its own tokenizer's embeddings, its own blocks); numeric
and embedded categorical columns, if any, join the pooled texts before the head, as Ludwig's
concat combiner does. Because padding is masked everywhere it could leak in, a text's logits do
not depend on how much it is padded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import ValidationInfo, field_validator
from torch import nn
from torch.nn import functional as F

from dataflywheel.errors import ModelError
from dataflywheel.features.batch import TABULAR, Batch, text_names
from dataflywheel.models.mlp import CategoricalEmbedding, model_task
from dataflywheel.models.params import Fraction, ModelParams, PositiveInt


class TransformerParams(ModelParams):
    """``model.params`` of ``model.type: transformer``; ``text_vocab_size`` and ``max_length``
    come from the first text column's tokenizer, ``more_text`` (``[vocab_size, max_length]``
    each) from the others'."""

    text_vocab_size: PositiveInt | None = None
    max_length: PositiveInt = 128
    more_text: list[list[PositiveInt]] = []
    """One ``[vocab_size, max_length]`` per text column after the first (filled in from the data)."""
    n_layer: PositiveInt = 2
    n_head: PositiveInt = 4
    d_model: PositiveInt = 128
    """Width of the token vectors; a multiple of n_head."""
    dropout: Fraction = 0.1
    mlp_ratio: PositiveInt = 4
    embedding_dim: PositiveInt = 8
    """Width of each categorical column's embedding."""

    @field_validator("more_text")
    @classmethod
    def _pairs(cls, v: list[list[int]]) -> list[list[int]]:
        if any(len(pair) != 2 for pair in v):
            raise ValueError("each entry must be [vocab_size, max_length]")
        return v

    @field_validator("d_model")
    @classmethod
    def _heads_divide(cls, v: int, info: ValidationInfo) -> int:
        n_head = info.data.get("n_head")
        if n_head and v % n_head:
            raise ValueError(f"must be a multiple of n_head ({n_head})")
        return v


class SelfAttention(nn.Module):
    """Multi-head self-attention over (B, T, C) with a key padding mask."""

    def __init__(self, d_model: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, T, C); mask: (B, 1, 1, T) bool, True where the key is a real token
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        out: torch.Tensor = self.resid_dropout(self.proj(y))  # (B, T, C)
        return out


class FeedForward(nn.Module):
    def __init__(self, d_model: int, ratio: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, ratio * d_model)
        self.proj = nn.Linear(ratio * d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.dropout(self.proj(F.gelu(self.fc(x))))  # (B, T, C)
        return out


class Block(nn.Module):
    """Pre-norm residual block: attention, then MLP."""

    def __init__(self, d_model: int, n_head: int, dropout: float, mlp_ratio: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_head, dropout)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = FeedForward(d_model, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)  # (B, T, C)
        out: torch.Tensor = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return out


class TokenEncoder(nn.Module):
    """One text column's encoder: token + position embeddings, the blocks, a final LayerNorm
    and mean pooling over the real tokens: ``(tokens (B, T), mask (B, T)) -> (B, d_model)``."""

    def __init__(self, vocab_size: int, max_length: int, n_layer: int, n_head: int, d_model: int, dropout: float,
                 mlp_ratio: int) -> None:
        super().__init__()
        self.max_length = max_length
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(max_length, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_head, dropout, mlp_ratio) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        B, T = tokens.shape
        if T > self.max_length:
            raise ModelError(f"{T} tokens exceed the model's max_length {self.max_length}")
        mask = torch.ones_like(tokens, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        pos = torch.arange(T, device=tokens.device)  # (T,)
        x: torch.Tensor = self.dropout(self.tok_emb(tokens) + self.pos_emb(pos))  # (B, T, C)
        key_mask = mask[:, None, None, :]  # (B, 1, 1, T)
        for block in self.blocks:
            x = block(x, key_mask)  # (B, T, C)
        x = self.ln_f(x)  # (B, T, C)
        weights = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (B, C)


class TextTransformer(TokenEncoder):
    """A batch's ``numeric``, ``categorical`` and, per text column, ``tokens`` and
    ``attention_mask`` (``tokens_1``, ``attention_mask_1``, ... for the second, ...) -> logits
    (B, n_outputs): one encoder per input (the first text column's is this module's own
    :class:`TokenEncoder` part, the others' are in ``more``; the numbers as they are; an
    embedding per category), concatenated before the head."""

    def __init__(
        self,
        n_numeric: int,
        cardinalities: Sequence[int],
        n_outputs: int,
        vocab_size: int,
        max_length: int,
        n_layer: int,
        n_head: int,
        d_model: int,
        dropout: float,
        mlp_ratio: int,
        embedding_dim: int,
        more_text: Sequence[Sequence[int]] = (),
    ) -> None:
        super().__init__(vocab_size, max_length, n_layer, n_head, d_model, dropout, mlp_ratio)
        self.more = nn.ModuleList(
            TokenEncoder(v, t, n_layer, n_head, d_model, dropout, mlp_ratio) for v, t in more_text
        )
        self.inputs = (*TABULAR, *(name for i in range(1 + len(self.more)) for name in text_names(i)))
        self.embed = CategoricalEmbedding(cardinalities, embedding_dim)
        width = d_model * (1 + len(self.more)) + n_numeric + self.embed.out_features
        self.head = nn.Linear(width, n_outputs)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def input_embedding(self, name: str) -> nn.Module | None:
        """The embedding an explanation attributes the input ``name`` at."""
        if name == "categorical":
            return self.embed
        for i, encoder in enumerate(self._text_encoders()):
            if name == text_names(i)[0]:
                return encoder.tok_emb
        return None

    def _text_encoders(self) -> list[TokenEncoder]:
        """One encoder per text column: this module's own part, then ``more``'s."""
        return [self, *(m for m in self.more if isinstance(m, TokenEncoder))]

    # A batch, not TokenEncoder's (tokens, mask): the first text encoder is inherited so that its
    # weights keep their top-level names (tok_emb.weight, ...) in saved bundles.
    def forward(self, batch: Batch) -> torch.Tensor:  # type: ignore[override]
        # numeric: (B, n_numeric); categorical: (B, n_cat); tokens, attention_mask: (B, T) per text column
        parts: list[torch.Tensor] = []
        for i, encoder in enumerate(self._text_encoders()):
            tokens, mask = (batch.get(name) for name in text_names(i))
            if tokens is None:
                raise ModelError(f"a transformer model needs token ids ({text_names(i)[0]})",
                                 fix="pass the text column")
            parts.append(TokenEncoder.forward(encoder, tokens, mask))  # (B, C)
        parts.append(batch["numeric"].to(parts[0].dtype))
        if self.embed.tables:
            parts.append(self.embed(batch["categorical"]).to(parts[0].dtype))  # (B, n_cat * dim)
        logits: torch.Tensor = self.head(torch.cat(parts, dim=1))  # (B, n_outputs)
        return logits


def build_transformer(
    *, n_numeric: int, cardinalities: list[int], n_outputs: int, task: str, **params: Any
) -> TextTransformer:
    """Build a :class:`TextTransformer` from :class:`TransformerParams`. Raise
    :class:`ModelError` naming ``model.params.X`` for a bad value."""
    kind = model_task(task)
    if params.get("text_vocab_size") is None:
        raise ModelError("a transformer reads text, and the data has no text column", where="model.type",
                         fix="give a column type: text in data.features, or use model.type: mlp")
    if not kind.outputs_ok(n_outputs):
        raise ModelError(f"a {task} model cannot have n_outputs = {n_outputs}", where="model")
    p = TransformerParams.parse(params, model_type="transformer")
    assert p.text_vocab_size is not None
    return TextTransformer(n_numeric, cardinalities, n_outputs, p.text_vocab_size, p.max_length, p.n_layer,
                           p.n_head, p.d_model, float(p.dropout), p.mlp_ratio, p.embedding_dim, p.more_text)
