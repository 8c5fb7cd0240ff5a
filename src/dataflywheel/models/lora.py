"""What the model families on a base share about LoRA (peft): the ``model.params.lora`` settings and
the adapter files a bundle keeps.

A LoRA bundle holds its adapters in peft's own format (``adapter_config.json`` naming the base as
the bundle does, ``adapter_model.safetensors``), so ``peft.PeftModel.from_pretrained(base_model,
bundle_folder)`` loads them too.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationInfo, field_validator

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
