"""The weights that make a trained model: what bundles, checkpoints and early stopping keep.

Most models keep their whole ``state_dict``. A model built on a base it loads from its own
folder (a LoRA or frozen-encoder :class:`~dataflywheel.models.pretrained.PretrainedClassifier`)
keeps its trained part alone (``bundle_state_dict``), and says which base that part belongs to
(``base_reference()``: folder, content hash, fine-tuning mode). For MiniLM with LoRA that is
0.9 MB instead of 89 MB; for a 7 B-parameter base, megabytes instead of 28 GB per checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dataflywheel.models.capabilities import BuiltOnBase, LoadsTrainedPart, SavesTrainedPart


def trained_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a copy of ``model`` built from its spec needs to equal it (live, not copied)."""
    if isinstance(model, SavesTrainedPart):
        return dict(model.bundle_state_dict())
    return model.state_dict()


def load_trained_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Take back :func:`trained_weights` (its key set must match: the model's own error otherwise)."""
    if isinstance(model, LoadsTrainedPart):
        model.load_bundle_state_dict(weights)
    else:
        model.load_state_dict(weights)


def base_of(model: nn.Module) -> dict[str, Any] | None:
    """What ``model`` was built on and is not in :func:`trained_weights`, or None."""
    return model.base_reference() if isinstance(model, BuiltOnBase) else None
