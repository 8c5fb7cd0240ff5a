"""Dynamic int8 quantisation: ``nn.Linear`` weights stored as int8, activations quantised per batch.

It needs no calibration data and applies at load time, so the bundle keeps its fp32 weights
and nothing new is saved. Embeddings, LayerNorm and attention stay fp32; for the MLP and the
from-scratch transformer the Linear layers are nearly all of the compute.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


def quantized_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` whose ``nn.Linear`` layers are int8 (``qint8``) dynamic
    quantised; ``model`` itself is left untouched. Called exactly like the original."""
    fp32 = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not a dependency.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        from torch.ao.quantization import quantize_dynamic

        # torch.ao.quantization's functions carry no annotations.
        quantized: nn.Module = quantize_dynamic(fp32, {nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]
    return quantized.eval()
