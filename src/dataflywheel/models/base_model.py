"""Where a ``pretrained`` model's base comes from, and how a bundle names it.

A bundle references its base model portably (:func:`portable_base`): by its hub name, or by its
folder's path relative to the project (flywheel.yaml's folder), never by an absolute path of the
machine it was trained on; and by :func:`content_hash`, the SHA-256 over its ``config.json`` and
weight files. Loading looks the relative path up in the folders :func:`resolve_base` is given (the
project's, and the bundle folder's parents: a store inside the project finds it after the project
moved). :func:`prepare_config` (called by the training stage) records both in ``model.params``
and points the text column's ``tokenizer`` at the base folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dataflywheel.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from dataflywheel.config import FlywheelConfig
    from dataflywheel.data.schema import Schema

CONFIG_FILE = "config.json"
SAFE_WEIGHT_PATTERNS = ("*.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHT_PATTERNS = ("pytorch_model*.bin", "pytorch_model.bin.index.json")
WEIGHT_PATTERNS = SAFE_WEIGHT_PATTERNS + PICKLE_WEIGHT_PATTERNS


def base_files(folder: Path) -> list[Path]:
    """``config.json`` and the weight files of a base-model folder, sorted; a missing folder,
    config or weights raises :class:`ModelError` naming what is missing."""
    where = f"base model {folder}"
    if not folder.is_dir():
        raise ModelError("base model folder not found", where=where,
                         fix="restore the folder or set model.params.base to a local model folder")
    weights = sorted({p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern) if p.is_file()})
    missing = [CONFIG_FILE] if not (folder / CONFIG_FILE).is_file() else []
    if not weights:
        missing.append("model weights (model.safetensors or pytorch_model.bin)")
    if missing:
        raise ModelError(f"base model folder lacks {' and '.join(missing)}", where=where,
                         fix="copy the complete model folder (save_pretrained writes all of them)")
    return [folder / CONFIG_FILE, *weights]


def content_hash(folder: str | Path) -> str:
    """SHA-256 over the names and contents of a base model's config and weight files."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in base_files(folder):
        with open(path, "rb") as fh:
            file_digest = hashlib.file_digest(fh, "sha256").hexdigest()
        digest.update(f"{path.name}\0{file_digest}\n".encode())
    return digest.hexdigest()


def local_folder(base: str, base_dir: Path | Sequence[Path] | None) -> Path | None:
    """The first folder named by ``base`` (absolute, or relative to one of ``base_dir``), or None.
    A ``.gguf`` file stands for its safetensors folder, converted once and cached by the file's
    hash (:func:`~dataflywheel.models.gguf.gguf_folder`)."""
    path = Path(base).expanduser()
    candidates = [path] if path.is_absolute() else [
        folder / path for folder in [*map(Path, [base_dir] if isinstance(base_dir, str | Path) else
                                              list(base_dir or [])), Path.cwd()]]
    for candidate in candidates:
        if candidate.suffix == ".gguf" and candidate.is_file():
            from dataflywheel.models.gguf import gguf_folder

            return gguf_folder(candidate)
        if candidate.is_dir():
            return candidate.absolute()  # not resolved: a link (e.g. to site-packages) stays the reference
    return None


def resolve_base(base: str, base_dir: Path | Sequence[Path] | None = None) -> Path:
    """A local folder for ``model.params.base``: a path (relative to ``base_dir``, normally
    flywheel.yaml's folder, or to the first of several folders that holds it, then the working
    folder), else a hub name found in (or, when online, fetched into) the local Hugging Face cache."""
    folder = local_folder(base, base_dir)
    if folder is not None:
        return folder
    path = Path(base).expanduser()
    if not path.is_absolute():
        first = base_dir if isinstance(base_dir, str | Path) else next(iter(base_dir or []), None)
        path = Path(first) / path if first is not None else path
    if Path(base).is_absolute() or base.startswith(".") or base.count("/") > 1:
        base_files(path)  # raises: folder not found
    try:
        from huggingface_hub import snapshot_download

        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        return Path(snapshot_download(repo_id=base, local_files_only=offline))
    except Exception as exc:  # noqa: BLE001 - hub errors vary by version; all mean "not available"
        raise ModelError(
            f"base model not found: no folder {path} and no hub model {base!r} available ({type(exc).__name__})",
            where="model.params.base",
            fix="give a local model folder (relative to flywheel.yaml) or a hub name in the local cache",
        ) from None


def portable_base(base: str, folder: Path, base_dir: Path | None) -> str:
    """How a bundle names the base ``base`` (resolved to ``folder``): a hub name as it is, a
    local folder by its POSIX path relative to ``base_dir`` (the project's folder)."""
    if local_folder(base, base_dir) is None:
        return base  # a hub name, found in the Hugging Face cache
    return Path(os.path.relpath(folder, (base_dir or Path.cwd()).absolute())).as_posix()


def prepare_config(cfg: FlywheelConfig, schema: Schema) -> FlywheelConfig:
    """For a model type built on a base (its params declare ``base_hash``: ``pretrained``,
    ``causal_lm``): a copy of ``cfg`` whose ``model.params.base`` is the portable reference of
    :func:`portable_base`, ``model.params.base_hash`` the base's :func:`content_hash`, and whose
    text column reads the base's tokenizer (``max_length`` stays the feature's). Other model
    types: ``cfg`` itself. A text column given another tokenizer is a :class:`ConfigError`."""
    from dataflywheel.config import FeatureConfig
    from dataflywheel.models.registry import params_class

    declared = params_class(cfg.model.type)
    if declared is None or "base_hash" not in declared.model_fields:
        return cfg
    params = dict(cfg.model.params)
    if not params.get("base"):
        raise ConfigError(
            f"a {cfg.model.type} model needs a base model", where="model.params.base",
            fix="set it to a local model folder or a hub name in the local cache, e.g. "
                "sentence-transformers/all-MiniLM-L6-v2",
        )
    given_base = str(params["base"])
    folder = resolve_base(given_base, cfg.base_dir)
    params["base"] = portable_base(given_base, folder, cfg.base_dir)
    params["base_hash"] = content_hash(folder)
    # A local base's tokenizer by the same project-relative path; a hub model's from the cache.
    tokenizer = params["base"] if local_folder(given_base, cfg.base_dir) is not None else str(folder)
    overrides = {f.name: f for f in cfg.data.features}
    features = list(cfg.data.features)
    texts = [c.name for c in schema.features if c.name not in cfg.data.exclude
             and ((overrides[c.name].type if c.name in overrides else None) or c.type) == "text"]
    if not texts:
        raise ConfigError(f"a {cfg.model.type} model reads a text column, and the data has none",
                          where="model.type",
                          fix="give a column type: text in data.features, or use model.type: mlp")
    for col in texts:
        current = overrides.get(col)
        given = current.tokenizer if current is not None else None
        if given is not None and cfg.resolve(given).resolve() != folder.resolve():
            raise ConfigError(f"a {cfg.model.type} model reads its base model's own tokenizer",
                              where=f"data.features ({col}).tokenizer", fix="remove the tokenizer setting")
        updated = (current or FeatureConfig(name=col)).model_copy(update={"tokenizer": tokenizer})
        features = [updated if f.name == col else f for f in features] if current else [*features, updated]
    return cfg.model_copy(update={
        "model": cfg.model.model_copy(update={"params": params}),
        "data": cfg.data.model_copy(update={"features": features}),
    })


def open_base(base: str, base_hash: str | None, finetune: str, base_dirs: Sequence[Path], *,
              allow_pickle_weights: bool) -> tuple[Path, str, bool]:
    """``(folder, content hash, has safetensors)`` of the base ``model.params.base`` names,
    checked: weights that are pickle-based only are refused unless ``allow_pickle_weights``, and
    a model that rebuilds from the base's weights (every ``finetune`` but ``full``) is refused on
    a base whose hash differs from ``base_hash``, the one it was trained on."""
    folder = resolve_base(base, base_dirs)
    actual = content_hash(folder)
    safe = has_safetensors(folder)
    if not safe and not allow_pickle_weights:
        raise ModelError(
            "the base model's weights are pickle-based (pytorch_model.bin), which can run code when loaded; "
            "safetensors weights are required",
            where="model.params.allow_pickle_weights",
            fix="convert the base to safetensors (save_pretrained(folder, safe_serialization=True)), or set "
                "model.params.allow_pickle_weights: true if you trust the files",
        )
    if base_hash is not None and finetune != "full" and actual != base_hash:
        raise ModelError(
            f"base model content hash {actual[:16]} differs from {base_hash[:16]}, the base this "
            f"{finetune} model was trained on",
            where=f"base model {folder}",
            fix="restore the original base model files in that folder, or re-train on the new base (flywheel run)",
        )
    return folder, actual, safe


def has_safetensors(folder: Path) -> bool:
    """Whether the base folder holds safetensors weights (else only pickle-based ones)."""
    return any(p.is_file() for pattern in SAFE_WEIGHT_PATTERNS for p in folder.glob(pattern))


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bars (a fresh head, a base loaded for
    fine-tuning, are expected here)."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity(logging.ERROR)
    # transformers' progress-bar switches carry no annotations.
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
