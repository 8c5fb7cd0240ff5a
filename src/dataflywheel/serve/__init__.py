"""Serving: a FastAPI app over a registered model, with micro-batching, a prediction log,
hot swap, metrics and (optionally) an automatic retrain worker.

``create_app`` builds the app (for tests and ASGI servers); ``serve`` runs it with uvicorn
(``flywheel serve``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dataflywheel.config import FlywheelConfig
    from dataflywheel.serve.app import ServeSettings

__all__ = ["ServeSettings", "create_app", "serve"]


def __getattr__(name: str) -> object:  # keep `import dataflywheel.serve` free of FastAPI
    if name in ("create_app", "ServeSettings"):
        from dataflywheel.serve import app

        return getattr(app, name)
    raise AttributeError(name)


def serve(
    config: FlywheelConfig | str | Path = "flywheel.yaml",
    alias: str = "champion",
    host: str | None = None,
    port: int | None = None,
    settings: ServeSettings | None = None,
    auto_retrain: bool = False,
) -> None:
    """Serve ``alias`` of the project over HTTP until interrupted (one process, one worker).

    ``host``/``port``/``settings`` default to flywheel.yaml's ``serve`` section. With
    ``auto_retrain`` the retrain worker runs as a separate process for the server's lifetime.
    Access logs are off (they cost more than a prediction); /metrics counts every request.
    """
    import uvicorn

    from dataflywheel.serve.app import _config, create_app

    cfg = _config(config)
    app = create_app(config if auto_retrain else cfg, alias, settings, auto_retrain=auto_retrain)
    uvicorn.run(app, host=host or cfg.serve.host, port=port or cfg.serve.port, log_level="info",
                access_log=False)
