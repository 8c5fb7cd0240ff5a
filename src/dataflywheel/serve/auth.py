"""Who may call what: one access matrix that every route of the server is registered in.

When the environment variable ``FLYWHEEL_API_TOKEN`` is set (when the app is created), a route
whose access class is guarded needs ``Authorization: Bearer <token>``: none -> 401 (with
``WWW-Authenticate: Bearer``), a wrong one -> 403. The comparison runs in constant time
(:func:`hmac.compare_digest`). Unset (or empty), nothing is checked.

The classes, and whether each is guarded while a token is set:

========  ==========================================================  =======================
class     routes                                                      guarded
========  ==========================================================  =======================
public    GET /v1/health, GET /v1/ready (probes)                      never
read      GET /v1/model, /v1/monitor, /metrics, /docs, /openapi.json  ``serve.auth.read``
predict   POST /v1/predict, POST /v1/explain                          ``serve.auth.predict``
write     POST /v1/feedback                                           always
admin     POST /v1/admin/*                                            always
========  ==========================================================  =======================

``serve.auth.read`` defaults to ``token``, ``serve.auth.predict`` to ``open``. A route is
registered with :meth:`AccessMatrix.register` (a path template, or a mount's prefix with
``/*``) as it is declared; :class:`AuthMiddleware` enforces the matrix in front of every route,
the hot path included, and treats a path no entry matches as guarded, so a route that was
never registered is closed rather than open. :meth:`AccessMatrix.unregistered` lists the
app's routes without an entry (the app refuses to start with any).
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Iterable, Mapping
from typing import Literal

import orjson
from fastapi import FastAPI, HTTPException
from starlette.routing import BaseRoute, Mount, compile_path

from dataflywheel.config import AuthConfig
from dataflywheel.serve.asgi import ASGIApp, Receive, Scope, Send, send_json

ENV_VAR = "FLYWHEEL_API_TOKEN"
Access = Literal["public", "read", "predict", "write", "admin"]
ACCESS_CLASSES: tuple[Access, ...] = ("public", "read", "predict", "write", "admin")


class BearerAuth:
    """The bearer token check; a no-op when no token is configured."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> BearerAuth:
        return cls(environ.get(ENV_VAR) or None)

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def check(self, authorization: str | None) -> None:
        """Raise a 401 or 403 :class:`HTTPException` unless ``authorization`` carries the token."""
        if self._token is None:
            return
        scheme, _, given = (authorization or "").strip().partition(" ")
        if not authorization or scheme.lower() != "bearer" or not given.strip():
            raise HTTPException(401, f"this endpoint needs 'Authorization: Bearer <token>' ({ENV_VAR} is set)",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), self._token):
            raise HTTPException(403, "invalid bearer token")


class AccessMatrix:
    """Route -> access class, and whether that class needs the token (see the module doc)."""

    def __init__(self, auth: BearerAuth, rules: AuthConfig | None = None) -> None:
        rules = rules or AuthConfig()
        self.auth = auth
        self.guarded: dict[Access, bool] = {"public": False, "read": rules.read == "token",
                                            "predict": rules.predict == "token", "write": True, "admin": True}
        self._exact: dict[str, Access] = {}
        self._patterns: list[tuple[str, re.Pattern[str], Access]] = []

    def register(self, path: str, access: Access) -> None:
        """Put ``path`` (``/v1/x``, a template ``/v1/x/{id}``, or a prefix ``/docs/assets/*``)
        in the matrix with ``access``."""
        if access not in self.guarded:
            raise ValueError(f"unknown access class {access!r}; one of {', '.join(ACCESS_CLASSES)}")
        if path.endswith("/*"):
            self._patterns.append((path, re.compile(re.escape(path[:-1]) + ".*"), access))
        elif "{" in path:
            self._patterns.append((path, compile_path(path)[0], access))
        else:
            self._exact[path] = access

    def access_of(self, path: str) -> Access | None:
        """The class of a request path, or None when no entry matches."""
        found = self._exact.get(path)
        if found is not None:
            return found
        for _, pattern, access in self._patterns:
            if pattern.fullmatch(path):
                return access
        return None

    def needs_token(self, path: str) -> bool:
        """Whether a request to ``path`` must carry the token (an unknown path must, when one is set)."""
        if not self.auth.enabled:
            return False
        access = self.access_of(path)
        return access is None or self.guarded[access]

    def class_needs_token(self, access: Access) -> bool:
        """Whether ``access`` is guarded once a token is set (for the OpenAPI schema)."""
        return self.guarded[access]

    def unregistered(self, app: FastAPI) -> list[str]:
        """The app's route paths (mounts as ``prefix/*``) no entry covers."""
        return [shown for shown, probe in _route_paths(app.routes) if self.access_of(probe) is None]


def _route_paths(routes: Iterable[BaseRoute]) -> list[tuple[str, str]]:
    """(path as shown, a request path it answers) per route."""
    paths = []
    for route in routes:
        path = getattr(route, "path", None)
        if path is None:
            continue
        if isinstance(route, Mount):
            paths.append((f"{path.rstrip('/')}/*", f"{path.rstrip('/')}/"))
        else:
            paths.append((path, path))
    return paths


class AuthMiddleware:
    """Enforce an :class:`AccessMatrix` on every HTTP request before anything else reads it."""

    def __init__(self, app: ASGIApp, matrix: AccessMatrix) -> None:
        self.app = app
        self.matrix = matrix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.matrix.needs_token(scope["path"]):
            authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
            try:
                self.matrix.auth.check(authorization)
            except HTTPException as exc:
                await _refuse(send, exc)
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, exc: HTTPException) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()]
    await send_json(send, exc.status_code, orjson.dumps({"detail": exc.detail}), headers)
