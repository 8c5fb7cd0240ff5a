"""What the model families on a base share: the ``model.params`` (:class:`BaseModelParams`, the
``lora`` settings among them), the module around the base (:class:`AdaptedBase`: its reference,
LoRA merging) and the adapter files a bundle keeps.

A LoRA bundle holds its adapters in peft's own format (``adapter_config.json`` naming the base as
the bundle does, ``adapter_model.safetensors``), so ``peft.PeftModel.from_pretrained(base_model,
bundle_folder)`` loads them too.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pydantic import ValidationInfo, field_validator
from torch import nn

from dataflywheel.errors import ModelError
from dataflywheel.models.params import Fraction, ModelParams, PositiveInt, StrictBool

if TYPE_CHECKING:
    from peft import PeftModel

ADAPTER_WEIGHTS = "adapter_model.safetensors"
"""peft's adapter weights file, written into a LoRA bundle (with peft's adapter_config.json)."""


class LoraParams(ModelParams):
    """``model.params.lora``: peft ``LoraConfig`` settings."""

    r: PositiveInt = 8
    alpha: PositiveInt = 16
    dropout: Fraction = 0.1
    target_modules: list[str] | None = None
    """Module names to place adapters on, e.g. [query, value] or [q_proj, v_proj]; null: peft's
    default for the base."""


def write_adapters(peft_model: PeftModel, folder: Path, base_name: str | None) -> None:
    """Write ``peft_model``'s adapters (and its modules to save) into ``folder`` in peft's format,
    ``adapter_config.json`` naming the base ``base_name``."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    state = get_peft_model_state_dict(peft_model)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(Path(folder) / ADAPTER_WEIGHTS),
              metadata={"format": "pt"})
    config = copy.deepcopy(peft_model.peft_config["default"])
    config.base_model_name_or_path = base_name
    config.inference_mode = True
    config.save_pretrained(str(folder))


class BaseModelParams(ModelParams):
    """The ``model.params`` every family fine-tuning a Hugging Face base shares (``pretrained``,
    ``causal_lm``); each narrows ``finetune`` to its modes. ``text_vocab_size`` and ``max_length``
    come from the text column's encoder, ``base_hash`` from
    :func:`~dataflywheel.models.base_model.prepare_config`."""

    text_vocab_size: PositiveInt | None = None
    max_length: PositiveInt = 128
    base: str | None = None
    """A local model folder or ``.gguf`` file (relative to flywheel.yaml), or a Hugging Face hub name
    in the local cache."""
    base_hash: str | None = None
    finetune: str = "lora"
    lora: LoraParams | None = None
    allow_pickle_weights: StrictBool = False

    @field_validator("lora")
    @classmethod
    def _lora_mode(cls, v: LoraParams | None, info: ValidationInfo) -> LoraParams | None:
        if v is not None and info.data.get("finetune", "lora") != "lora":
            raise ValueError("applies to finetune: lora only")
        return v


class AdaptedBase(nn.Module):
    """A Hugging Face base (``hf``) fine-tuned in one of its family's modes (``finetune``): what
    the ``pretrained`` and ``causal_lm`` modules share. ``reference`` is what model.json records
    about the base (its hub ``name`` or project-relative ``path``, content hash, mode); a ``lora``
    model's ``hf`` is the peft model around the base until :meth:`for_inference` merges it."""

    def __init__(self, hf: nn.Module, finetune: str, max_positions: int, reference: dict[str, Any]) -> None:
        super().__init__()
        self.hf = hf
        self.finetune = finetune
        self.max_positions = max_positions
        self.reference = reference
        self.merged = False

    def base_reference(self) -> dict[str, Any]:
        """What model.json records about the base (:func:`~dataflywheel.models.base_model.portable_base`)."""
        return dict(self.reference)

    def write_bundle_files(self, folder: Path) -> None:
        """LoRA: the adapters in peft's format (``adapter_config.json`` naming the base as
        :meth:`base_reference` does, ``adapter_model.safetensors``), which ``PeftModel.from_pretrained``
        loads on the base. Other modes: nothing."""
        if self.finetune != "lora":
            return
        write_adapters(self._peft_model(), folder, self.reference.get("name") or self.reference.get("path"))

    def for_inference(self) -> Self:
        """Fold LoRA adapters into the base weights (peft ``merge_and_unload``), in place: the same
        function without the adapters' extra matmuls, which int8 quantisation, the ONNX exporter
        and transformers' generation handle like any model. A merged model can no longer give its
        bundle weights back. Other modes: unchanged."""
        if self.finetune == "lora" and not self.merged:
            from dataflywheel.models.base_model import quiet_transformers

            peft_model = self._peft_model()
            with quiet_transformers():
                self.hf = peft_model.merge_and_unload()
            self.merged = True
        return self

    def load_checked(self, state: dict[str, Any], expected: set[str]) -> None:
        """Load bundle weights ``state`` whose keys must be ``expected`` (else a :class:`ModelError`)."""
        if set(state) != expected:
            extra, missing = sorted(set(state) - expected), sorted(expected - set(state))
            raise ModelError(f"bundle weights do not fit this {self.finetune} model "
                             f"(unexpected {extra[:3]}, missing {missing[:3]})", where="model.safetensors",
                             fix="re-register the model")
        self.load_state_dict(state, strict=self.finetune == "full")

    def _peft_model(self) -> PeftModel:
        """``hf`` of a lora model whose adapters are not merged: the peft model around the base."""
        from peft import PeftModel

        if self.merged:
            raise ModelError("this model's LoRA adapters were merged for inference; its adapter weights are gone",
                             fix="save the model before calling for_inference()")
        assert isinstance(self.hf, PeftModel), "a lora model wraps its base in peft"
        return self.hf
