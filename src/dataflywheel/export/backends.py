"""The serving backend (``serve.backend``): fp32 torch, int8 dynamic quantisation in torch, or
ONNX Runtime in fp32 or int8, and a side-by-side measure of what each costs in accuracy and
gains in speed.

Every backend gives an ``nn.Module`` called like the bundle's network, so
:func:`~dataflywheel.models.predict.predict_logits`, :class:`Predictor` and the server run it
unchanged. The others are built at load time from the bundle's fp32 weights, on its inference
network (:func:`~dataflywheel.export.first_token.inference_network`); ``torch`` is the
network as trained, the reference the others are measured against.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
import polars as pl
from torch import nn

from dataflywheel.config import ONNX_BACKENDS, Backend
from dataflywheel.errors import ConfigError
from dataflywheel.tasks import get_task

if TYPE_CHECKING:
    from onnx import ModelProto

    from dataflywheel.registry.predictor import Predictor

    OnnxSource = str | Path | ModelProto | None

BACKENDS: tuple[Backend, ...] = get_args(Backend)
REPORTED = ("accuracy", "f1", "macro_f1", "roc_auc", "log_loss", "rmse", "mae", "r2")
"""Metrics :func:`compare_backends` reports, where the task has them."""


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def backend_model(predictor: Predictor, backend: Backend, *, threads: int | None = None,
                  onnx_file: OnnxSource = None) -> nn.Module:
    """The network to run for ``backend``: the bundle's own model (``torch``), an int8 copy of
    its inference network (``int8``), or an onnxruntime session over its fp32 export (``onnx``)
    or that export quantised (``onnx-int8``). An ONNX backend opens the bundle's cached export
    when its key matches (:func:`~dataflywheel.export.onnx.cached_export`), else builds it (from
    ``onnx_file``, an fp32 export of this bundle as a file or an ``onnx.ModelProto``, when given,
    else by exporting now) and caches it. ``threads`` is onnxruntime's
    intra-op thread count, chosen by model size when None as for torch."""
    if backend == "torch":
        return predictor.model
    if backend == "int8":
        from dataflywheel.export.first_token import inference_network
        from dataflywheel.export.quantize import quantized_copy

        return quantized_copy(inference_network(predictor.model))
    if backend in ONNX_BACKENDS:
        import onnx

        from dataflywheel.export.onnx import OnnxModel, cached_export, export_proto, keep_export
        from dataflywheel.runtime import choose_threads

        n_threads = choose_threads(threads, n_params(predictor.model))
        int8 = backend == "onnx-int8"
        cached = cached_export(predictor, int8)
        if cached is not None:
            return OnnxModel(cached, threads=n_threads)
        program = None
        if onnx_file is not None:
            program = onnx_file if isinstance(onnx_file, onnx.ModelProto) else onnx.load(str(onnx_file))
        proto = export_proto(predictor, int8, program)
        keep_export(predictor, proto, int8)  # the next load of this bundle opens it
        return OnnxModel(proto.SerializeToString(), threads=n_threads)
    raise ConfigError(f"must be one of {list(BACKENDS)} (got {backend!r})", where="serve.backend")


def with_backend(predictor: Predictor, backend: Backend, *, threads: int | None = None,
                 onnx_file: OnnxSource = None) -> Predictor:
    """A shallow copy of ``predictor`` whose ``predict``/``scores`` run on ``backend``."""
    if backend == "torch":
        return predictor
    other = copy.copy(predictor)
    other.model = backend_model(predictor, backend, threads=threads, onnx_file=onnx_file)
    return other


def compare_backends(predictor: Predictor, df: pl.DataFrame, *, backends: tuple[Backend, ...] = BACKENDS,
                     target: str | None = None, batch_size: int = 64, repeats: int = 3,
                     threads: int | None = None, onnx_file: OnnxSource = None) -> dict[str, Any]:
    """Each backend on the rows of ``df``: its metrics (when ``df`` holds the ``target`` column,
    default the bundle schema's), the largest absolute difference of its scores from fp32 torch
    (probabilities; values for regression), the share of labels that agree with fp32, and
    rows/s of the network alone on pre-encoded inputs in batches of ``batch_size`` (best of
    ``repeats``, torch and onnxruntime on the same thread count). ``onnx_file``: an existing
    export of this bundle to use instead of exporting again. The result is JSON-safe."""
    from dataflywheel.export.onnx import cached_export, onnx_program
    from dataflywheel.runtime import set_threads

    if not target and predictor.schema is not None:
        target = predictor.schema.target
    n_threads = set_threads(threads, n_params(predictor.model))
    if onnx_file is None and any(b in ONNX_BACKENDS and cached_export(predictor, b == "onnx-int8") is None
                                 for b in backends):
        onnx_file = onnx_program(predictor)  # one export for both onnx rows, unless cached
    reference: np.ndarray | None = None
    results: dict[str, Any] = {}
    for backend in dict.fromkeys(("torch", *backends)):  # fp32 first: the reference
        running = with_backend(predictor, backend, threads=n_threads, onnx_file=onnx_file)
        scores, _ = running.scores(df)
        if reference is None:
            reference = scores
        entry: dict[str, Any] = {
            "metrics": _metrics(running, df, target, scores),
            "max_abs_diff": _float(np.max(np.abs(scores - reference))) if scores.size else 0.0,
            "label_agreement": get_task(predictor.task).agreement(scores, reference, predictor.threshold),
            "rows_per_s": _throughput(running, df, batch_size, repeats),
        }
        if backend in backends:
            results[backend] = entry
    return {"task": predictor.task, "version": predictor.version, "rows": df.height, "threads": n_threads,
            "batch_size": batch_size, "backends": results}


def _metrics(predictor: Predictor, df: pl.DataFrame, target: str | None, scores: np.ndarray) -> dict[str, float | None]:
    if target is None or target not in df.columns or df.height == 0:
        return {}
    from dataflywheel.evaluate.metrics import evaluate_predictions
    from dataflywheel.evaluate.stage import true_values

    metrics = evaluate_predictions(predictor.task, true_values(predictor, df, target), scores,
                                   class_names=predictor.class_names, threshold=predictor.threshold)
    return {k: _float(metrics[k]) for k in REPORTED if k in metrics}


def _throughput(predictor: Predictor, df: pl.DataFrame, batch_size: int, repeats: int) -> float | None:
    from dataflywheel.models.predict import predict_logits

    if df.height == 0:
        return None
    batch = predictor.preprocessor.transform(df)
    pad_id = predictor.preprocessor.pad_ids_
    best = math.inf
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        predict_logits(predictor.model, batch.inputs, pad_id=pad_id, batch_size=batch_size)
        best = min(best, time.perf_counter() - start)
    return round(df.height / best, 1) if best > 0 else None


def _float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
