"""One way from a model reference to a loaded :class:`~dataflywheel.registry.predictor.Predictor`.

A reference is a version number (``3``, ``v3``), an alias (``champion``) or a bundle folder.
The CLI, the Python API, the server, the monitor, the retrain trigger and the gate all load
models through :func:`load`, so a reference means the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from dataflywheel.registry import versions
from dataflywheel.registry.predictor import Predictor
from dataflywheel.store import Project


@dataclass
class LoadedModel:
    predictor: Predictor
    info: versions.VersionInfo | None
    """The registry's row for the version; None for a bundle folder loaded on its own."""


def is_bundle_ref(ref: str | int | Path) -> TypeGuard[str | Path]:
    """Whether ``ref`` names a bundle folder rather than a version or an alias."""
    return isinstance(ref, (str, Path)) and Path(ref).is_dir()


def load(project: Project | None, ref: str | int | Path, *, base_dir: Path | None = None,
         model_from: Any = None) -> LoadedModel:
    """Resolve ``ref`` in ``project``'s registry and load its bundle (a folder loads without a
    project). A pretrained model named by a relative path is looked up in ``base_dir``;
    ``model_from``: see :func:`~dataflywheel.registry.bundle.read_bundle`."""
    if is_bundle_ref(ref):
        return LoadedModel(Predictor.load(ref), None)
    if project is None:
        raise TypeError("a version or alias reference needs a project")
    info = versions.resolve(project, ref if isinstance(ref, int) else str(ref))
    predictor = Predictor.load(project.artifacts.path(info.artifact), base_dir=base_dir, model_from=model_from)
    predictor.version = info.version
    return LoadedModel(predictor, info)
