"""Model versions, aliases, bundles, and :func:`load` (a reference to a loaded predictor)."""

from __future__ import annotations

from typing import Any

__all__ = ["LoadedModel", "load"]


def __getattr__(name: str) -> Any:
    # Lazy: ``registry.versions`` is imported by modules that never load a model (and torch).
    if name in __all__:
        from dataflywheel.registry import loader

        return getattr(loader, name)
    raise AttributeError(name)
