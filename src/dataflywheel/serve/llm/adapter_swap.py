"""A promoted LoRA version of the served base swapped in without loading the base again.

A LoRA bundle holds its adapters alone; the served model is the base with the adapters folded in
(the engine and transformers' generation run a plain model: no extra matmuls per token). To serve
another version of the same base (the same content hash, adapters on the same modules), the
base's own weights of the adapted modules are recovered once, the served weights minus the served
version's adapters (:class:`SharedBase`), and the new model is a copy of the served one that
shares every other tensor and holds the new version's adapters folded into those modules. So a
swap reads only the new adapters from disk, and the two versions side by side during the swap
cost the adapted modules twice (for SmolLM2-135M with q/v adapters, 13 MB), not the whole base.
A full fine-tune, another base or other adapted modules load whole, as before.

This is the choice issue 17 asks to document: merged adapters, re-merged in the background
before the swap, over a base shared between versions (no quantised base here: int8 decoding is
not built).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

LORA_A, LORA_B = ".lora_A.default.weight", ".lora_B.default.weight"
PREFIX = "hf.base_model.model."
"""Where a LoRA bundle's adapter names start: the CausalLM's peft model around the base."""


@dataclass(frozen=True)
class Adapters:
    """One LoRA version: its base (content hash) and the weight change of each adapted module
    (``(out, in)``: ``B @ A * alpha / r``, as peft merges it), by module name in the base."""

    base_hash: str
    deltas: dict[str, torch.Tensor]

    def fits(self, other: Adapters) -> bool:
        return self.base_hash == other.base_hash and set(self.deltas) == set(other.deltas)


def read_adapters(folder: Path, meta: dict[str, Any]) -> Adapters | None:
    """The adapters of the bundle in ``folder`` (``meta`` its model.json), or None when it is not
    a LoRA fine-tune of a causal LM whose weights are adapters alone."""
    from safetensors.torch import load_file

    spec = meta.get("spec") or {}
    args = spec.get("args") or {}
    lora = args.get("lora") or {}
    if spec.get("type") != "causal_lm" or args.get("finetune", "lora") != "lora" or not args.get("base_hash"):
        return None
    r, alpha = int(lora.get("r", 8)), float(lora.get("alpha", 16))
    state = load_file(str(folder / "model.safetensors"))
    modules = {k[len(PREFIX):-len(LORA_A)] for k in state if k.startswith(PREFIX) and k.endswith(LORA_A)}
    expected = {f"{PREFIX}{m}{suffix}" for m in modules for suffix in (LORA_A, LORA_B)}
    if not modules or set(state) != expected:  # anything besides adapters (modules_to_save): load whole
        return None
    scale = alpha / r
    deltas = {m: (state[f"{PREFIX}{m}{LORA_B}"].float() @ state[f"{PREFIX}{m}{LORA_A}"].float()) * scale
              for m in sorted(modules)}
    return Adapters(str(args["base_hash"]), deltas)


class SharedBase:
    """The served base's own weights of the adapted modules, recovered from a served (merged)
    model and the adapters folded into it; :meth:`model_for` builds another version's model."""

    def __init__(self, served: nn.Module, adapters: Adapters) -> None:
        self.adapters = adapters
        self.weights = {name: (_weight(served, name).detach() - delta).contiguous()
                        for name, delta in adapters.deltas.items()}

    def fits(self, adapters: Adapters) -> bool:
        return self.adapters.fits(adapters)

    def model_for(self, served: nn.Module, adapters: Adapters) -> nn.Module:
        """A copy of ``served`` sharing every tensor but the adapted modules' weights, which hold
        the base's plus ``adapters``' change."""
        memo: dict[int, Any] = {}
        for tensor in (*served.parameters(), *served.buffers()):
            memo[id(tensor)] = tensor
        for name, delta in adapters.deltas.items():
            weight = _weight(served, name)
            memo[id(weight)] = nn.Parameter((self.weights[name] + delta.to(dtype=weight.dtype)).contiguous(),
                                            requires_grad=False)
        model = copy.deepcopy(served, memo)
        model.eval()
        return model


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    weight = model.get_submodule(name).weight
    assert isinstance(weight, torch.Tensor), f"{name} has no weight tensor"
    return weight


def served_causal_lm(hf: nn.Module, max_positions: int, meta: dict[str, Any]) -> nn.Module:
    """``hf`` (adapters folded in) as the bundle's model in inference form."""
    from dataflywheel.models.causal_lm import CausalLM

    model = CausalLM(hf, "lora", max_positions, dict(meta.get("base_model") or {}))
    model.merged = True
    return model.eval()
