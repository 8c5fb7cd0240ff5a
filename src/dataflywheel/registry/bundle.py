"""The model bundle: everything needed to predict, in one folder, checked on load.

:class:`ModelBundle` is the bundle in memory: training produces one, :func:`write_bundle` (through
:func:`~dataflywheel.registry.register.register`) writes it, :func:`read_bundle` reads it back and
:class:`~dataflywheel.registry.predictor.Predictor` wraps it.

On disk: ``model.safetensors`` (weights), ``model.json`` (architecture, task, target encoding,
decision threshold, privacy settings), ``preprocessor.json``, ``schema.json``, ``metrics.json``,
``lineage.json`` and ``manifest.json`` (SHA-256 of every other file). Loading verifies the
manifest first and never unpickles anything.

A model may store less than its whole ``state_dict``: one with ``bundle_state_dict()`` (e.g. a
LoRA or frozen-encoder ``pretrained`` model: adapters and head only) has that saved instead, and
one with ``base_reference()`` gets it recorded in model.json as ``base_model`` (the hub name or
project-relative path, and the content hash, of the base weights it is rebuilt on). One with
``write_bundle_files(folder)`` adds its own files (a LoRA model: peft's ``adapter_config.json``
and ``adapter_model.safetensors``); the manifest covers them too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dataflywheel.errors import BundleIntegrityError

if TYPE_CHECKING:
    from torch import nn

    from dataflywheel.config import PrivacyConfig
    from dataflywheel.data.schema import Schema
    from dataflywheel.features.preprocessor import Preprocessor
    from dataflywheel.features.target import TargetEncoder

REQUIRED = (
    "model.safetensors",
    "model.json",
    "preprocessor.json",
    "schema.json",
    "metrics.json",
    "lineage.json",
)
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class ModelBundle:
    """A trained model and everything that turns records into its inputs and its outputs into
    answers. ``model.json`` is :meth:`model_json`; the other fields are files of their own."""

    model: nn.Module
    task: str
    """The task's registered name (:func:`~dataflywheel.tasks.get_task`)."""
    preprocessor: Preprocessor
    target: TargetEncoder
    schema: Schema | None = None
    """The dataset's schema (always present in a written bundle)."""
    spec: dict[str, Any] = field(default_factory=dict)
    """The builder spec ``{"type": ..., "args": {...}}`` (:func:`~dataflywheel.models.registry.model_spec`)."""
    target_column: str | None = None
    threshold: float = 0.5
    """The decision threshold of a task that uses one (chosen on the validation split)."""
    privacy: PrivacyConfig | None = None
    """The redaction the training data had; None: not recorded (the loader's default applies)."""
    version: int | None = None
    """The registry's version number, once registered."""
    base_model: dict[str, Any] | None = None
    """A pretrained model's base reference, as read back from ``model.json``."""

    def model_json(self) -> dict[str, Any]:
        """What ``model.json`` records (the bundle writer adds ``format_version`` and the base)."""
        out: dict[str, Any] = {"spec": self.spec, "task": self.task, "target_column": self.target_column,
                               "target_encoder": self.target.to_dict(), "threshold": self.threshold}
        if self.privacy is not None:
            out["privacy"] = self.privacy.model_dump(mode="json")
        if self.version is not None:
            out["version"] = self.version
        if self.base_model is not None:
            out["base_model"] = self.base_model
        return out


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), encoding="utf-8")


def write_bundle(folder: Path, bundle: ModelBundle, *, metrics: dict[str, Any],
                 lineage: dict[str, Any]) -> dict[str, str]:
    """Write a complete bundle into ``folder`` (normally a temporary folder that is renamed
    into place by the caller) and return its manifest."""
    from safetensors.torch import save_file

    from dataflywheel.models.capabilities import WritesBundleFiles
    from dataflywheel.models.weights import base_of, trained_weights

    if bundle.schema is None:
        raise ValueError("a bundle is written with its schema")
    folder.mkdir(parents=True, exist_ok=True)
    model = bundle.model
    state = {k: v.detach().contiguous().cpu() for k, v in trained_weights(model).items()}
    save_file(state, str(folder / "model.safetensors"))
    model_json = bundle.model_json()
    base = base_of(model)
    if base is not None:
        model_json["base_model"] = base
    if isinstance(model, WritesBundleFiles):
        model.write_bundle_files(folder)
    write_json(folder / "model.json", {"format_version": FORMAT_VERSION, **model_json})
    bundle.preprocessor.save(folder / "preprocessor.json")
    bundle.schema.save(folder / "schema.json")
    write_json(folder / "metrics.json", metrics)
    write_json(folder / "lineage.json", lineage)
    return write_manifest(folder)


def read_trainable_model(folder: Path, *, base_dirs: list[Path] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The verified bundle's network as it was trained (LoRA adapters separate and trainable,
    nothing folded) and its ``model.json``: what training that continues a version starts from."""
    from safetensors.torch import load_file

    from dataflywheel.models.registry import build_model
    from dataflywheel.models.weights import load_trained_weights

    folder = Path(folder)
    verify_bundle(folder)
    meta = read_json(folder, "model.json")
    dirs = [*(base_dirs or []), *folder.absolute().parents]
    model = build_model(meta["spec"], base_dirs=dirs)  # a pretrained model checks its base's hash here
    load_trained_weights(model, load_file(str(folder / "model.safetensors")))
    return model, meta


def read_bundle(folder: Path, *, base_dirs: list[Path] | None = None,
                model_from: Callable[[Path, dict[str, Any]], nn.Module | None] | None = None) -> ModelBundle:
    """Verify the bundle in ``folder`` and load it, the model in inference form and in eval
    mode. A base model named by a relative path is looked up in ``base_dirs``, then in the
    bundle folder's parents (a store inside the project). ``model_from(folder, model.json)``
    may give the model in inference form from elsewhere (a LoRA version over a base already in
    memory, :mod:`~dataflywheel.serve.llm.adapter_swap`); None builds it from the files."""
    from dataflywheel.data.schema import Schema
    from dataflywheel.features.preprocessor import Preprocessor
    from dataflywheel.features.target import TargetEncoder
    from dataflywheel.models.capabilities import HasInferenceForm
    from dataflywheel.privacy.inputs import bundle_privacy

    folder = Path(folder)
    given = None
    if model_from is not None:
        verify_bundle(folder)
        meta = read_json(folder, "model.json")
        given = model_from(folder, meta)
    if given is not None:
        model = given
    else:
        model, meta = read_trainable_model(folder, base_dirs=base_dirs)
    if isinstance(model, HasInferenceForm):
        model = model.for_inference()  # e.g. LoRA adapters folded into the base weights
    model.eval()
    privacy = meta.get("privacy")
    return ModelBundle(
        model=model,
        task=meta["task"],
        preprocessor=Preprocessor.load(folder / "preprocessor.json"),
        target=TargetEncoder.from_dict(meta["target_encoder"]),
        schema=Schema.load(folder / "schema.json"),
        spec=meta["spec"],
        target_column=meta.get("target_column"),
        threshold=float(meta.get("threshold", 0.5)),
        privacy=None if privacy is None else bundle_privacy(privacy),
        version=meta.get("version"),
        base_model=meta.get("base_model"),
    )


def write_manifest(folder: Path) -> dict[str, str]:
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = {name: sha256_file(folder / name) for name in files}
    write_json(folder / MANIFEST, manifest)
    return manifest


def verify_bundle(folder: Path) -> dict[str, str]:
    """Check every file against the manifest; raise naming the first missing or altered file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleIntegrityError("model bundle folder not found", where=str(folder))
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise BundleIntegrityError("manifest.json is missing", where=str(folder), fix="re-register the model")
    try:
        manifest: dict[str, str] = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise BundleIntegrityError("manifest.json is not valid JSON", where=str(manifest_path)) from None
    for name in REQUIRED:
        if name not in manifest:
            raise BundleIntegrityError(f"{name} is not listed in the manifest", where=str(folder))
    for name, digest in manifest.items():
        path = folder / name
        if not path.is_file():
            raise BundleIntegrityError("file is missing from the model bundle", where=str(path),
                                       fix="restore it or re-register the model")
        if sha256_file(path) != digest:
            raise BundleIntegrityError("file was altered: its SHA-256 does not match manifest.json",
                                       where=str(path), fix="restore the original file or re-register the model")
    return manifest


def read_json(folder: Path, name: str) -> Any:
    return json.loads((Path(folder) / name).read_text(encoding="utf-8"))
