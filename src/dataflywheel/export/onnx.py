"""ONNX export of a bundle's network, and :class:`OnnxModel`, which runs it with onnxruntime.

The graph takes the same inputs as the torch model: ``numeric`` (B, n_numeric) float32 and
``categorical`` (B, n_categorical) int64, plus for a text model ``tokens`` (B, T) int64 and
``attention_mask`` (B, T) bool; it returns ``logits`` (B, n_outputs). B is dynamic, and T is
dynamic up to the model's ``max_length``, so one file serves any batch and any padding.

The exporter is torch's own (``torch.onnx.export(dynamo=True)``), on the bundle's inference
network (:func:`~dataflywheel.export.first_token.inference_network`: a BERT classifier's last
layer for the first token alone). onnxscript's ``optimize_for_ort`` then fuses the graph into
onnxruntime's kernels (multi-head attention, bias + GELU), and :func:`quantize_onnx` makes the
int8 variant: onnxruntime dynamic quantisation, int8 weights and activations quantised per
batch for every MatMul with a weight.

An export is cached in the bundle's ``exports/`` folder (where ``flywheel export`` writes it
too), stamped with a key over the bundle's weights, the export format and the library versions
(:func:`export_key`): a server loading an ONNX backend reuses it (MiniLM: under a second
against 15-20 s to export), and rebuilds it when the key differs.

The graph is then rewritten for onnxruntime's CPU kernels (:mod:`~dataflywheel.export.rewrites`):
skip-LayerNorm split into its two plain ops (and :class:`OnnxModel` turns off onnxruntime's
own ``SkipLayerNormFusion``), attention without its mask for batches with nothing padded
(onnxruntime's fused attention kernel then applies), and GELU in its tanh form for int8.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from dataflywheel.errors import ModelError
from dataflywheel.features.batch import Batch, model_reads

if TYPE_CHECKING:
    import onnx_ir
    from onnx import ModelProto
    from torch.export import Dim

    from dataflywheel.registry.predictor import Predictor

OPSET = 18
EXPORT_REVISION = 6
"""Bumped whenever the exported graph changes, so cached exports made before are rebuilt."""
KEY = "dataflywheel.export_key"


def _example(predictor: Predictor,
             reads: tuple[str, ...]) -> tuple[tuple[torch.Tensor, ...], tuple[dict[int, Dim], ...]]:
    """Example inputs (batch 2), one per batch name the network reads, and their dynamic shapes
    (the axes each name's :class:`~dataflywheel.features.batch.InputKey` declares dynamic),
    sized from the bundle's model spec."""
    from dataflywheel.features.batch import input_key, text_names

    args = predictor.meta["spec"]["args"]
    widths = {"numeric": int(args["n_numeric"]), "categorical": len(args["cardinalities"])}
    first = int(getattr(predictor.model, "max_length", 0) or args.get("max_length") or 512)
    batch = torch.export.Dim("batch")
    seq: dict[str, tuple[Dim, int]] = {}  # a text column's names -> its length Dim and max_length
    for i, max_length in enumerate([first, *(int(t) for _v, t in args.get("more_text", ()))]):
        dim = torch.export.Dim("seq" if i == 0 else f"seq_{i}", min=1, max=max_length)
        seq |= {name: (dim, max_length) for name in text_names(i)}
    example: list[torch.Tensor] = []
    shapes: list[dict[int, Dim]] = []
    for name in reads:
        key = input_key(name)
        dtype = {"float": torch.float32, "long": torch.long, "bool": torch.bool}[key.kind]
        size = min(4, seq[name][1]) if 1 in key.dynamic else widths.get(name, 1)
        # ones: ids other than padding and masks that keep every token, so no path special-cases them
        example.append(torch.ones(2, size, dtype=dtype) if name in seq else torch.zeros(2, size, dtype=dtype))
        shapes.append({axis: batch if axis == 0 else seq[name][0] for axis in key.dynamic})
    return tuple(example), tuple(shapes)


class Positional(nn.Module):
    """``model(batch)`` called with the batch's tensors as positional arguments, in the order
    of ``names``: what the exporter traces, so the graph's inputs are the batch names."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(dict(zip(self.names, tensors, strict=True)))
        return logits


def onnx_program(predictor: Predictor) -> ModelProto:
    """The bundle's inference network as an ``onnx.ModelProto`` (fp32, eval mode, fused for
    onnxruntime), with the bundle's task, version and class names in its metadata. Raise
    :class:`ModelError` when it cannot export."""
    from dataflywheel.export.first_token import inference_network

    model: nn.Module = inference_network(predictor.model)
    was_training = model.training
    model.eval()
    reads = model_reads(model)
    example, shapes = _example(predictor, reads)
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(Positional(model, reads), example, dynamo=True, opset_version=OPSET,
                                        input_names=list(reads), output_names=["logits"],
                                        dynamic_shapes=(shapes,), verbose=False)
    except Exception as exc:  # the exporter raises many types; all mean "this model cannot export"
        raise ModelError(f"cannot export the {predictor.meta['spec']['type']} model to ONNX: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                         fix="serve it with backend torch or int8") from exc
    finally:
        model.train(was_training)
        quiet.setLevel(level)
    assert program is not None  # torch.onnx.export returns a program under dynamo=True
    proto = _fused(program.model)
    meta = {"dataflywheel.task": predictor.task, "dataflywheel.version": str(predictor.version),
            "dataflywheel.class_names": json.dumps(predictor.class_names)}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


def _fused(model: onnx_ir.Model) -> ModelProto:
    """``model`` (an ``onnx_ir.Model``) with onnxruntime's fusions applied, skip-LayerNorm
    split back into Add + LayerNormalization and attention unmasked for unpadded batches, as a
    ModelProto."""
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    from dataflywheel.export.rewrites import split_skip_layer_norms, unmask_unpadded_attention

    fused, _ = optimize_for_ort(model)
    proto = ir.serde.serialize_model(fused)
    split_skip_layer_norms(proto.graph)
    unmask_unpadded_attention(proto)
    return proto


def quantize_onnx(proto: ModelProto) -> ModelProto:
    """An int8 copy of the fp32 ``proto`` (onnxruntime ``quantize_dynamic``: int8 weights per
    tensor, activations quantised per batch), metadata kept."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="dataflywheel-int8-") as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(proto.SerializeToString())
        quiet = logging.getLogger()  # "consider pre-processing before quantization": not for dynamic
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            # the fused onnxruntime ops carry no type information; their outputs are float
            quantize_dynamic(source, target, weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        finally:
            quiet.setLevel(level)
        return onnx.load(str(target))


KEY_LIBRARIES = ("torch", "transformers", "peft", "onnx", "onnxscript", "onnxruntime")
"""Libraries whose version changes what the exporter traces or writes."""


def export_key(predictor: Predictor, int8: bool) -> str | None:
    """What an export of this bundle depends on, hashed: the manifest's digests of
    ``model.safetensors`` and ``model.json`` (checked when the bundle loaded), int8 or not,
    :data:`EXPORT_REVISION`, this code's version (package version and git commit) and the
    versions of :data:`KEY_LIBRARIES`. None for a model that is not a bundle on disk."""
    from importlib.metadata import PackageNotFoundError, version

    from dataflywheel.lineage import code_version

    manifest = Path(getattr(predictor, "folder", "") or "") / "manifest.json"
    if not manifest.is_file():
        return None
    digests = json.loads(manifest.read_text(encoding="utf-8"))
    libraries: dict[str, str | None] = {}
    for lib in KEY_LIBRARIES:
        try:
            libraries[lib] = version(lib)
        except PackageNotFoundError:
            libraries[lib] = None
    parts = {"weights": digests.get("model.safetensors"), "model": digests.get("model.json"), "int8": int8,
             "revision": EXPORT_REVISION, "code": code_version(), **libraries}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cache_path(predictor: Predictor, int8: bool) -> Path:
    """Where the bundle's export lives: ``<bundle>/exports/model.onnx`` or ``model.int8.onnx``."""
    return Path(predictor.folder) / "exports" / ("model.int8.onnx" if int8 else "model.onnx")


def cached_export(predictor: Predictor, int8: bool) -> bytes | None:
    """The bundle's cached export, as the bytes whose key was checked (so a file replaced
    meanwhile is never what runs), when that key matches this bundle, code and libraries."""
    key = export_key(predictor, int8)
    path = cache_path(predictor, int8) if key is not None else None
    if path is None or not path.is_file():
        return None
    import onnx

    data = path.read_bytes()
    try:
        props = {p.key: p.value for p in onnx.load_model_from_string(data).metadata_props}
    except Exception:  # a truncated or foreign file is rebuilt, never trusted
        return None
    return data if props.get(KEY) == key else None


def export_onnx(predictor: Predictor, path: str | Path, *, int8: bool = False,
                program: ModelProto | None = None) -> Path:
    """Write the network to ``path`` (a ``.onnx`` file, or a folder that gets ``model.onnx``,
    ``model.int8.onnx`` with ``int8``) and return the file written, through a temporary file
    and a rename: the bundle's cached export when it is fresh (:func:`cached_export`), else one
    built from ``program`` (this bundle's :func:`onnx_program`, if the caller has it already) or
    exported now. Weights are embedded and the file carries its :func:`export_key`; the bundle's
    own files are not touched."""
    path = Path(path)
    if path.suffix != ".onnx":
        path = path / ("model.int8.onnx" if int8 else "model.onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = cached_export(predictor, int8) if program is None else None
    if data is None:
        _write(export_proto(predictor, int8, program).SerializeToString(), path)
    elif path.resolve() != cache_path(predictor, int8).resolve():
        _write(data, path)
    return path


def keep_export(predictor: Predictor, proto: ModelProto, int8: bool) -> None:
    """Cache ``proto`` (from :func:`export_proto`) in the bundle's ``exports/``. A bundle folder
    that cannot be written (read-only storage) is warned about: the next load exports again."""
    if export_key(predictor, int8) is None:
        return
    path = cache_path(predictor, int8)
    try:
        path.parent.mkdir(exist_ok=True)
        _sweep_partials(path.parent)
        _write(proto.SerializeToString(), path)
    except OSError as exc:
        warnings.warn(f"could not cache the ONNX export in {path.parent} ({exc.strerror}); the next load "
                      "exports again", stacklevel=2)


def _sweep_partials(folder: Path, older_than_s: float = 3600.0) -> None:
    """Remove temporary files a killed writer left behind (each can be the size of the model)."""
    import time

    for partial in folder.glob(".*.partial"):
        try:
            if time.time() - partial.stat().st_mtime > older_than_s:
                partial.unlink()
        except OSError:
            pass


def _write(data: bytes, path: Path) -> None:
    """``data`` to ``path`` through a uniquely named temporary file and a rename, so two
    processes writing the same export never interleave and a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def export_proto(predictor: Predictor, int8: bool, program: ModelProto | None = None) -> ModelProto:
    """The export as a ModelProto (``program``: the fp32 :func:`onnx_program`, if made already),
    quantised with ``int8`` (GELU then in its tanh form, :func:`~dataflywheel.export.rewrites.approximate_gelu`),
    stamped with its :func:`export_key`."""
    import onnx

    from dataflywheel.export.rewrites import approximate_gelu

    proto = program if program is not None else onnx_program(predictor)
    if int8:
        proto = quantize_onnx(proto)
        approximate_gelu(proto.graph)
    elif program is not None:  # stamp a copy: the caller's program stays as it was
        proto = onnx.ModelProto()
        proto.CopyFrom(program)
    key = export_key(predictor, int8)
    if key is not None:
        kept = [p for p in proto.metadata_props if p.key != KEY]
        del proto.metadata_props[:]
        proto.metadata_props.extend(kept)
        entry = proto.metadata_props.add()
        entry.key, entry.value = KEY, key
    return proto


_ORT_TYPES: dict[str, type[np.generic]] = {"tensor(float)": np.float32, "tensor(int64)": np.int64,
                                           "tensor(bool)": np.bool_}


class OnnxModel(nn.Module):
    """An ONNX graph behind the torch model's call: ``model(batch) -> logits`` as a float32
    tensor, reading the batch names that are the graph's inputs (its ``inputs``). It has no
    parameters, so :func:`~dataflywheel.models.predict.predict_logits` and the server use it
    unchanged.

    ``threads`` sets onnxruntime's intra-op threads (one by default, as for small torch models);
    inter-op is sequential. With two or more threads, onnxruntime's workers spin briefly between
    operators (its default, as torch's OpenMP threads do) rather than sleep: a worker that must
    be woken for every operator made MiniLM's served texts/s about 10 % lower on 2 cores."""

    def __init__(self, model: str | Path | bytes, *, threads: int = 1) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=["SkipLayerNormFusion"])
        graph_inputs = self.session.get_inputs()  # the exporter drops inputs the graph never reads
        self.input_names = [i.name for i in graph_inputs]
        self.input_kinds = [_ORT_TYPES.get(i.type, np.float32) for i in graph_inputs]
        self.inputs = tuple(self.input_names)
        self.threads = threads

    def forward(self, batch: Batch) -> torch.Tensor:
        feeds: dict[str, np.ndarray] = {}
        for name, kind in zip(self.input_names, self.input_kinds, strict=True):
            value = batch.get(name)
            if value is None:
                raise ModelError(f"the ONNX model needs input {name!r}", fix="pass the text column")
            feeds[name] = np.ascontiguousarray(value.detach().cpu().numpy(), dtype=kind)
        (logits,) = self.session.run(["logits"], feeds)
        return torch.from_numpy(logits)
