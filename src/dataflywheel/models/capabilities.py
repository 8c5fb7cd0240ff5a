"""What a model may do beyond ``forward``, as small protocols checked with ``isinstance``.

A model built on a base it loads from its own folder (a LoRA or frozen-encoder
:class:`~dataflywheel.models.pretrained.PretrainedClassifier`, a
:class:`~dataflywheel.models.causal_lm.CausalLM`) keeps and loads a trained part alone, names its
base, writes extra bundle files and has a faster inference form; a causal LM also checkpoints
activations on request and generates; a plain model does none of these and keeps its whole
``state_dict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn


@runtime_checkable
class SavesTrainedPart(Protocol):
    def bundle_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors a bundle stores (the trained part of the model)."""
        ...


@runtime_checkable
class LoadsTrainedPart(Protocol):
    def load_bundle_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Take back :meth:`SavesTrainedPart.bundle_state_dict`."""
        ...


@runtime_checkable
class BuiltOnBase(Protocol):
    def base_reference(self) -> dict[str, Any]:
        """What the model was built on and does not store: the base's name or path, hash, mode."""
        ...


@runtime_checkable
class WritesBundleFiles(Protocol):
    def write_bundle_files(self, folder: Path) -> None:
        """Write files of the model's own into a bundle folder (e.g. peft adapters)."""
        ...


@runtime_checkable
class HasInferenceForm(Protocol):
    def for_inference(self) -> nn.Module:
        """The model as it runs for prediction (e.g. LoRA adapters folded into the base)."""
        ...


@runtime_checkable
class EmbedsInputs(Protocol):
    def input_embedding(self, name: str) -> nn.Module | None:
        """The module whose output stands for the long batch input ``name`` (category indices,
        token ids) in an explanation's integration path; None: look it up the default way."""
        ...


@runtime_checkable
class CheckpointsActivations(Protocol):
    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass instead of keeping them (``train.gradient_checkpointing``)."""
        ...


@runtime_checkable
class Generates(Protocol):
    def generate_ids(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, stop_ids: Sequence[int],
                     pad_id: int) -> list[list[int]]:
        """Greedy continuations of token-id prompts, each cut before its first of ``stop_ids``."""
        ...
