"""Training checkpoints: safetensors for tensors, JSON for everything else. Never pickle.

A checkpoint is a folder ``epoch-NNNN-xxxxxx/`` holding ``model.safetensors`` (the model's
trained weights, readable by any safetensors tool: the whole state dict, or for a model on a
base it loads from its folder, such as LoRA, the trained part alone, with the base's content
hash in ``state.json`` and checked on resume; see :mod:`dataflywheel.models.weights`),
``state.safetensors`` (optimiser state, RNG
states, callback tensors such as early stopping's best weights) and ``state.json`` (epoch,
step, scheduler, history, config, ...; each tensor appears there as ``{"__tensor__": key}``).
The folder is written under a temporary name and renamed (atomic), then ``latest.json`` is
replaced atomically to point at it; older folders beyond ``keep`` are deleted afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dataflywheel.errors import ModelError
from dataflywheel.models.weights import base_of, load_trained_weights, trained_weights

if TYPE_CHECKING:
    from dataflywheel.train.callbacks import TrainState

FORMAT = 1
POINTER = "latest.json"
WEIGHTS, TENSORS, STATE = "model.safetensors", "state.safetensors", "state.json"


# -- nested state <-> (JSON, named tensors) ---------------------------------------------------


def flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Move every tensor in ``obj`` into ``tensors`` under a dotted key; return JSON-able data.
    Tuples and non-string dict keys are tagged so :func:`unflatten` rebuilds them exactly."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        tensors[prefix] = t
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {
                k: flatten(v, tensors, f"{prefix}.{k}" if prefix else k) for k, v in obj.items()
            }
        return {"__items__": [[k, flatten(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(
        f"cannot checkpoint {type(obj).__name__} at {prefix!r}: use tensors and JSON types"
    )


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__items__" in obj:
            return {k: unflatten(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
        return {k: unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): copy the repeats."""
    seen: set[int] = set()
    out = {}
    for k, t in tensors.items():
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        out[k] = t.clone() if ptr in seen else t
        if ptr != -1:
            seen.add(ptr)
    return out


# -- files ----------------------------------------------------------------------------------


def save_checkpoint(
    directory: str | Path, weights: dict[str, torch.Tensor], state: dict[str, Any], *, keep: int = 1
) -> Path:
    """Write one checkpoint atomically and point ``latest.json`` at it; return its folder."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{int(state.get('epoch', 0)):04d}-{secrets.token_hex(3)}"
    tmp = root / f".tmp-{name}"
    tmp.mkdir()
    tensors: dict[str, torch.Tensor] = {}
    doc = {"format": FORMAT, "state": flatten(state, tensors)}
    save_file(_unshared(weights), str(tmp / WEIGHTS))
    save_file(_unshared(tensors), str(tmp / TENSORS))
    (tmp / STATE).write_text(json.dumps(doc, indent=1), encoding="utf-8")
    os.replace(tmp, root / name)

    previous = _read_pointer(root).get("history", []) if (root / POINTER).exists() else []
    history = [name, *[n for n in previous if n != name]][: max(1, keep)]
    _write_json_atomic(root / POINTER, {"latest": name, "history": history})
    for child in root.iterdir():
        if (
            child.is_dir()
            and child.name.startswith(("epoch-", ".tmp-"))
            and child.name not in history
        ):
            shutil.rmtree(child, ignore_errors=True)
    return root / name


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The folder ``latest.json`` names, or None when ``directory`` holds no checkpoint."""
    root = Path(directory)
    if not (root / POINTER).is_file():
        return None
    folder: Path = root / _read_pointer(root)["latest"]
    if not folder.is_dir():
        raise ModelError(
            f"{POINTER} names a missing checkpoint {folder.name}", where=str(root), fix=_FIX
        )
    return folder


def load_checkpoint(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """``(model weights, state)`` of the latest checkpoint in ``directory``, or None if none."""
    folder = latest_checkpoint(directory)
    if folder is None:
        return None
    try:
        weights = load_file(str(folder / WEIGHTS))
        tensors = load_file(str(folder / TENSORS))
        doc = json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError, SafetensorError) as exc:
        raise ModelError(f"unreadable checkpoint ({exc})", where=str(folder), fix=_FIX) from None
    if doc.get("format") != FORMAT:
        raise ModelError(
            f"checkpoint format {doc.get('format')} is not {FORMAT}", where=str(folder), fix=_FIX
        )
    return weights, unflatten(doc["state"], tensors)


_FIX = "delete the checkpoint folder to start afresh, or train without resume"


def _read_pointer(root: Path) -> dict[str, Any]:
    try:
        data = json.loads((root / POINTER).read_text(encoding="utf-8"))
        assert isinstance(data, dict) and isinstance(data.get("latest"), str)
        return data
    except (OSError, ValueError, AssertionError):
        raise ModelError(f"unreadable {POINTER}", where=str(root), fix=_FIX) from None


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(3)}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


# -- a training run's state -----------------------------------------------------------------


def snapshot(state: TrainState) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Everything needed to continue ``state``'s run exactly: trained weights and the rest."""
    return trained_weights(state.model), {
        "epoch": state.epoch,
        "step": state.step,
        "stopped": state.stop,
        "task": state.task,
        "best": {"metric": state.best_metric, "value": state.best_value, "epoch": state.best_epoch},
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
        "rng": {"torch": torch.get_rng_state(), "shuffle": state.generator.get_state(), **_cuda_rng(state)},
        "callbacks": {key: cb.state_dict() for key, cb in state.keyed_callbacks()},
        "history": state.history,
        "config": state.cfg.model_dump(mode="json"),
        "base": base_of(state.model),
    }


def restore(state: TrainState, weights: dict[str, torch.Tensor], saved: dict[str, Any]) -> None:
    """Load a :func:`snapshot` into a freshly set-up ``state`` (same model and optimiser kinds,
    and for a model on a base, the same base: its content hash is compared)."""
    saved_base, base = saved.get("base"), base_of(state.model)
    if saved_base is not None and base is not None and saved_base.get("sha256") != base.get("sha256"):
        raise ModelError(
            f"the checkpoint was trained on base {str(saved_base.get('sha256'))[:16]} "
            f"({saved_base.get('path') or saved_base.get('name')}), "
            f"this model is built on {str(base.get('sha256'))[:16]} ({base.get('path') or base.get('name')})",
            fix="restore the original base model files, or " + _FIX,
        )
    try:
        load_trained_weights(state.model, weights)
        state.optimizer.load_state_dict(saved["optimizer"])
    except (RuntimeError, ValueError, KeyError, ModelError) as exc:
        raise ModelError(
            f"checkpoint does not fit this model/optimizer: {exc}".splitlines()[0], fix=_FIX
        ) from None
    if state.scheduler is not None and saved.get("scheduler") is not None:
        state.scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"]["torch"])
    if "cuda" in saved["rng"] and _model_device(state).type == "cuda":
        torch.cuda.set_rng_state(saved["rng"]["cuda"], _model_device(state))
    state.generator.set_state(saved["rng"]["shuffle"])
    state.epoch, state.step, state.stop = saved["epoch"], saved["step"], saved["stopped"]
    best = saved.get("best") or {}
    state.best_metric, state.best_value, state.best_epoch = (
        best.get("metric"),
        best.get("value"),
        best.get("epoch"),
    )
    state.history = list(saved.get("history", []))
    stored = saved.get("callbacks", {})
    for key, cb in state.keyed_callbacks():
        if key in stored:
            cb.load_state_dict(stored[key])


def _model_device(state: TrainState) -> torch.device:
    param = next(state.model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _cuda_rng(state: TrainState) -> dict[str, torch.Tensor]:
    """The GPU's generator (dropout masks) when the model trains on one, so a resumed run draws
    the same masks as an uninterrupted one."""
    device = _model_device(state)
    return {"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}
