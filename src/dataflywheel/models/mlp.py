"""The ``mlp`` builder: a multilayer perceptron over numeric columns and embedded categories.

With the defaults this is the classic Dense(64, ReLU) -> Dense(64, ReLU) -> Dense(1) network;
with ``hidden=[]`` it is a single neuron, i.e. logistic (binary) or linear (regression)
regression. The module returns logits; the loss and :func:`~dataflywheel.models.predict.predict_proba`
apply the sigmoid/softmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from dataflywheel.errors import ModelError
from dataflywheel.features.batch import TABULAR, Batch
from dataflywheel.models.params import Fraction, ModelParams, PositiveInt

if TYPE_CHECKING:
    from dataflywheel.tasks import Task

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


class MLPParams(ModelParams):
    """``model.params`` of ``model.type: mlp``."""

    hidden: list[PositiveInt] = [64, 64]
    """Hidden layer widths; [] is a single neuron (logistic or linear regression)."""
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"
    dropout: Fraction = 0.0
    embedding_dim: PositiveInt = 8
    """Width of each categorical column's embedding."""


class CategoricalEmbedding(nn.Module):
    """One ``nn.Embedding(cardinality, dim)`` per categorical column, concatenated."""

    def __init__(self, cardinalities: Sequence[int], dim: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(c, dim) for c in cardinalities)
        self.out_features = len(cardinalities) * dim

    def forward(self, categorical: torch.Tensor) -> torch.Tensor:
        # categorical: (B, n_cat) long -> (B, n_cat * dim)
        if not self.tables:
            return categorical.new_empty((categorical.shape[0], 0), dtype=torch.get_default_dtype())
        return torch.cat([table(categorical[:, i]) for i, table in enumerate(self.tables)], dim=1)


class MLP(nn.Module):
    """A batch's ``numeric`` and ``categorical`` -> logits; hidden layers are Linear -> activation
    -> Dropout."""

    inputs = TABULAR

    def __init__(
        self,
        n_numeric: int,
        cardinalities: Sequence[int],
        n_outputs: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        dropout: float = 0.0,
        embedding_dim: int = 8,
    ) -> None:
        super().__init__()
        self.embed = CategoricalEmbedding(cardinalities, embedding_dim)
        width = n_numeric + self.embed.out_features
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, batch: Batch) -> torch.Tensor:
        numeric, categorical = batch["numeric"], batch["categorical"]  # (B, n_numeric) float, (B, n_cat) long
        if self.embed.tables:
            x = torch.cat([numeric, self.embed(categorical).to(numeric.dtype)], dim=1)  # (B, n_in)
        else:
            x = numeric  # (B, n_numeric)
        h = self.body(x)  # (B, hidden[-1]) or (B, n_in) when hidden == []
        logits: torch.Tensor = self.head(h)  # (B, n_outputs)
        return logits


def build_mlp(*, n_numeric: int, cardinalities: list[int], n_outputs: int, task: str, **params: Any) -> MLP:
    """Build an :class:`MLP` from :class:`MLPParams`; raise :class:`ModelError` naming
    ``model.params.X`` for a bad value."""
    _check_shape(n_numeric, cardinalities, n_outputs, task)
    p = MLPParams.parse(params, model_type="mlp")
    return MLP(n_numeric, cardinalities, n_outputs, list(p.hidden), p.activation, float(p.dropout), p.embedding_dim)


def model_task(task: str) -> Task:
    """The registered task a builder is asked for; an unknown one is a :class:`ModelError`."""
    from dataflywheel.tasks import available_tasks, get_task

    if task not in available_tasks():
        raise ModelError(f"must be one of {available_tasks()} (got {task!r})", where="model.task")
    return get_task(task)


def _check_shape(n_numeric: int, cardinalities: list[int], n_outputs: int, task: str) -> None:
    kind = model_task(task)
    if n_numeric < 0 or any(c < 1 for c in cardinalities) or n_numeric + len(cardinalities) == 0:
        raise ModelError(
            f"needs at least one input column (got {n_numeric} numeric, cardinalities {cardinalities})",
            where="model",
            fix="check data.features and data.exclude",
        )
    if not kind.outputs_ok(n_outputs):
        raise ModelError(
            f"a {task} model needs n_outputs = {kind.outputs_expected} (got {n_outputs})", where="model"
        )

