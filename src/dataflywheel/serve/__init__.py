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
    A client gets ``serve.header_timeout_s`` to send a request's headers and
    ``serve.body_timeout_s`` for its body (:mod:`dataflywheel.serve.timeouts`).
    """
    import uvicorn

    from dataflywheel.serve import app as serve_app
    from dataflywheel.serve.timeouts import timed_protocol

    cfg = serve_app._config(config)
    host, port = host or cfg.serve.host, port or cfg.serve.port
    check_port(host, port)
    app = serve_app.create_app(config if auto_retrain else cfg, alias, settings, auto_retrain=auto_retrain)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False,
                http=timed_protocol(cfg.serve.header_timeout_s, cfg.serve.body_timeout_s))


def check_port(host: str, port: int) -> None:
    """Fail with one clear line before loading anything when the address is taken."""
    import socket

    from dataflywheel.errors import FlywheelError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise FlywheelError(f"cannot listen on {host}:{port} ({exc.strerror})", where="flywheel serve",
                                fix="pick another with --port or serve.port, or stop what holds it") from None
