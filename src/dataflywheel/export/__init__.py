"""Faster CPU inference: int8 quantisation and ONNX Runtime, chosen by ``serve.backend``.

- :func:`quantized_copy` (``quantize``): a copy of a model with every ``nn.Linear`` quantised to
  int8 weights (activations quantised on the fly); applied at load, nothing is saved.
- :func:`export_onnx`, :func:`quantize_onnx` and :class:`OnnxModel` (``onnx``): the network as an
  ONNX graph with dynamic batch (and sequence) axes, fused for onnxruntime, optionally int8,
  run by onnxruntime behind the same call as a torch model.
- :func:`inference_network` (``first_token``): what the faster backends run for a BERT
  classifier, the last layer computed for the first token alone (same logits, less work).
- :func:`backend_model`, :func:`with_backend` and :func:`compare_backends` (``backends``): the
  model for a backend name, and the accuracy and speed of each against fp32.

Heavy imports (onnx, onnxruntime) are lazy: importing this package costs nothing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BACKENDS", "OnnxModel", "backend_model", "compare_backends", "export_onnx", "inference_network",
           "quantize_onnx", "quantized_copy", "with_backend"]

_WHERE = {
    "quantized_copy": "quantize",
    "export_onnx": "onnx",
    "OnnxModel": "onnx",
    "quantize_onnx": "onnx",
    "inference_network": "first_token",
    "BACKENDS": "backends",
    "backend_model": "backends",
    "compare_backends": "backends",
    "with_backend": "backends",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
