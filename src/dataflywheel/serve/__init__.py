"""Serving: a FastAPI app over a registered model, with micro-batching and a prediction log.

``create_app`` builds the app (for tests and ASGI servers); ``serve`` runs it with uvicorn
(``flywheel serve``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dataflywheel.config import FlywheelConfig
    from dataflywheel.serve.app import ServeSettings

__all__ = ["create_app", "serve"]


def __getattr__(name: str) -> object:  # keep `import dataflywheel.serve` free of FastAPI
    if name in ("create_app", "ServeSettings"):
        from dataflywheel.serve import app

        return getattr(app, name)
    raise AttributeError(name)


def serve(
    config: FlywheelConfig | str | Path = "flywheel.yaml",
    alias: str = "champion",
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
) -> None:
    """Serve ``alias`` of the project over HTTP until interrupted (one process, one worker)."""
    import uvicorn

    from dataflywheel.serve.app import create_app

    uvicorn.run(create_app(config, alias, settings), host=host, port=port, log_level="info")
