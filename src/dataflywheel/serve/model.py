"""The model a server holds: a loaded bundle plus what serving needs around it.

:class:`ServedModel` is immutable once built, so a future hot swap is one reference
assignment: a batch reads the server's model once and uses it throughout.

:meth:`ServedModel.forward` is the server's hot path: validated records go through the
preprocessor's record path (no DataFrame for small batches) and straight into the network,
already in eval mode, under ``torch.inference_mode``; the answers come from the same decoding
as :meth:`Predictor.predict` (:meth:`Predictor.decode`, the task's). A text model's batch is
tokenised there too and padded per chunk of texts to the longest of the chunk
(:func:`~dataflywheel.models.predict.predict_logits`).

Privacy: :meth:`ServedModel.redact` is the predictor's own redaction
(:meth:`Predictor.redact_records`, the settings the bundle's training data was redacted with) and
runs *before* prediction and logging, so the model sees at serving what it saw in training and
what ``flywheel predict``, ``flywheel explain`` and the Python API give it, and the log never
holds the raw text. A model with nothing to redact has ``redactor`` None and pays nothing.

Backend: ``serve.backend`` picks what runs the network (``network``): the bundle's fp32 model
(``torch``, the default, ``network`` None), an int8 copy or an ONNX Runtime session
(:mod:`dataflywheel.export.backends`). The predictor keeps its fp32 model for explanations.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from dataflywheel.config import ONNX_BACKENDS, Backend, PrivacyConfig
from dataflywheel.data.schema import Schema
from dataflywheel.errors import ConfigError
from dataflywheel.features.batch import dtype_for
from dataflywheel.models.predict import as_batch, logits_to_output, predict_logits
from dataflywheel.privacy import Redactor
from dataflywheel.registry.predictor import Predictor
from dataflywheel.serve.schemas import record_model
from dataflywheel.store import Project


@dataclass(frozen=True)
class ServedModel:
    predictor: Predictor
    version: int | None
    metrics: dict[str, Any]
    columns: list[str]
    """The features a record must carry, in the preprocessor's order."""
    record_model: type[BaseModel]
    schema: Schema
    """The bundle's schema (a served bundle always has one)."""
    network: nn.Module | None = None
    """What runs the forward pass when not the predictor's own model (int8 or onnx backend)."""
    backend: Backend = "torch"
    device: str = "cpu"
    """Where the network runs (``serve.device``): ``cpu`` or ``cuda:N``."""

    @functools.cached_property
    def placement(self) -> tuple[torch.dtype, torch.device]:
        """The serving network's float dtype and device, found once."""
        return dtype_for(self.predictor.model if self.network is None else self.network)

    @property
    def redactor(self) -> Redactor | None:
        """A :class:`~dataflywheel.privacy.Redactor`, or None when no served column is redacted."""
        return self.predictor.redaction.redactor

    @property
    def redact_columns(self) -> tuple[str, ...]:
        """The record fields :meth:`redact` rewrites."""
        return self.predictor.redaction.columns

    def redact(self, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Validated records with PII replaced in ``redact_columns``, and counts per kind."""
        if self.redactor is None:
            return records, {}
        return self.predictor.redact_records(records)

    @property
    def task(self) -> str:
        return self.predictor.task

    @property
    def class_names(self) -> list[str] | None:
        return self.predictor.class_names

    def forward(self, records: list[dict[str, Any]],
                on_truncated: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        """Validated records -> ``{model_version, prediction, probabilities}`` each (one forward
        pass); ``on_truncated(n)`` hears how many texts were cut to ``max_length``, if any."""
        p = self.predictor
        net = p.model if self.network is None else self.network
        batch = p.preprocessor.transform_records(records, validated=True)  # by record_model
        if batch.texts:
            logits = predict_logits(net, batch.inputs, pad_id=p.preprocessor.pad_ids_)
            n_truncated = sum(batch.truncated.values())
            if n_truncated and on_truncated is not None:
                on_truncated(n_truncated)
        else:  # a few rows: one forward, no batching
            with torch.inference_mode():
                logits = net(as_batch(net, batch.inputs, placement=self.placement))
        scores = logits_to_output(logits, p.task)
        decoded = p.decode(p.task_object.scores(p.target, scores))
        version = self.version
        if decoded.proba is None:
            return [{"model_version": version, "prediction": v, "probabilities": None} for v in decoded.values]
        names = [str(c) for c in self.class_names or []]
        return [{"model_version": version, "prediction": str(label),
                 "probabilities": dict(zip(names, row, strict=True))}
                for label, row in zip(decoded.values, decoded.proba.tolist(), strict=True)]

    def describe(self, alias: str | None = None) -> dict[str, Any]:
        schema = self.schema
        return {
            "version": self.version,
            "alias": alias,
            "task": self.task,
            "class_names": self.class_names,
            "features": {c: schema.column(c).type for c in self.columns},
            "threshold": self.predictor.threshold if self.predictor.task_object.uses_threshold else None,
            "metrics": self.metrics,
            "redacted_fields": list(self.redact_columns),
            "backend": self.backend,
            "device": self.device,
            "schema": schema.to_dict(),
        }


def build_served_model(predictor: Predictor, version: int | None, metrics: dict[str, Any],
                       privacy: PrivacyConfig | None = None, *, backend: Backend = "torch",
                       threads: int | None = None) -> ServedModel:
    """``privacy`` None keeps the predictor's redaction (the bundle's); given, it replaces it
    (disabled redacts nothing; ``columns: text`` redacts the model's text inputs, a list the listed
    columns the model reads). ``backend`` other than torch builds the int8 or ONNX network now
    (``threads``: onnxruntime's intra-op threads)."""
    schema = predictor.schema
    if schema is None:
        raise ValueError("a served model needs its bundle's schema (a bundle read from the store has one)")
    columns = predictor.input_columns
    network = None
    if backend != "torch":
        from dataflywheel.export.backends import backend_model

        network = backend_model(predictor, backend, threads=threads)
    if privacy is not None:
        predictor.redaction = predictor.redaction_for(privacy)
    return ServedModel(predictor, version, dict(metrics), columns, record_model(schema, columns), schema,
                       network=network, backend=backend)


def serve_device(name: str, backend: Backend, n_params: int | None = None) -> torch.device:
    """The device for ``serve.device`` with ``backend``: the torch backend runs where
    :func:`~dataflywheel.runtime.resolve_device` says for a model of ``n_params``; int8 and ONNX
    Runtime run on the CPU, so ``auto`` means the CPU for them and a CUDA device is a
    :class:`ConfigError`."""
    from dataflywheel.runtime import resolve_device

    if backend == "torch":
        return resolve_device(name, where="serve.device", n_params=n_params)
    if name not in ("auto", "cpu"):
        raise ConfigError(f"{name!r} runs the torch backend only; the {backend} backend runs on the CPU",
                          where="serve.device", fix="set serve.backend: torch, or serve.device: cpu")
    return torch.device("cpu")


def load_served_model(project: Project, ref: str | int, *, threads: int | None = None,
                      privacy: PrivacyConfig | None = None, backend: Backend = "torch",
                      device: str = "cpu") -> ServedModel:
    """Resolve ``ref`` (alias or version), load and verify its bundle, move it to ``device``
    (``serve.device``, see :func:`serve_device`), set torch's threads and build the ``backend``'s
    network (``serve.backend``).

    With an ONNX backend, onnxruntime gets the threads and torch is left one: torch then only
    shapes small tensors, and an op that opens torch's thread pool right after an onnxruntime
    run waits for a core onnxruntime's workers still hold. Measured on 2 cores with MiniLM in
    int8: +12 % articles/s and +59 % headlines/s in batches of 16. Explanations
    (``/v1/explain``, torch) then run on one thread."""
    from dataflywheel import registry
    from dataflywheel.runtime import set_threads

    loaded = registry.load(project, ref)
    predictor, info = loaded.predictor, loaded.info
    assert info is not None
    n_params = sum(int(np.prod(p.shape)) for p in predictor.model.parameters())
    where = serve_device(device, backend, n_params)
    predictor.model.to(where)
    n_threads = set_threads(threads, n_params)
    served = replace(build_served_model(predictor, info.version, info.metrics, privacy, backend=backend,
                                        threads=n_threads), device=str(where))
    if backend in ONNX_BACKENDS:
        torch.set_num_threads(1)
    return served
