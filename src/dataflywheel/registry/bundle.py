"""The model bundle: everything needed to predict, in one folder, checked on load.

``model.safetensors`` (weights), ``model.json`` (architecture, task, target encoding,
decision threshold), ``preprocessor.json``, ``schema.json``, ``metrics.json``, ``lineage.json``
and ``manifest.json`` (SHA-256 of every other file). Loading verifies the manifest first and
never unpickles anything.

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
from pathlib import Path
from typing import Any

from dataflywheel.errors import BundleIntegrityError

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


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), encoding="utf-8")


def write_bundle(
    folder: Path,
    *,
    model: Any,
    model_json: dict[str, Any],
    preprocessor: Any,
    schema: Any,
    metrics: dict[str, Any],
    lineage: dict[str, Any],
) -> dict[str, str]:
    """Write a complete bundle into ``folder`` (normally a temporary folder that is renamed
    into place by the caller) and return its manifest."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    from dataflywheel.models.capabilities import WritesBundleFiles
    from dataflywheel.models.weights import base_of, trained_weights

    state = {k: v.detach().contiguous().cpu() for k, v in trained_weights(model).items()}
    save_file(state, str(folder / "model.safetensors"))
    base = base_of(model)
    if base is not None:
        model_json = {**model_json, "base_model": base}
    if isinstance(model, WritesBundleFiles):
        model.write_bundle_files(folder)
    write_json(folder / "model.json", {"format_version": FORMAT_VERSION, **model_json})
    preprocessor.save(folder / "preprocessor.json")
    schema.save(folder / "schema.json")
    write_json(folder / "metrics.json", metrics)
    write_json(folder / "lineage.json", lineage)
    return write_manifest(folder)


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
