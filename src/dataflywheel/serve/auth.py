"""Bearer-token protection of the write and admin endpoints.

When the environment variable ``FLYWHEEL_API_TOKEN`` is set (when the app is created), requests
to protected endpoints (``/v1/feedback``, ``/v1/admin/*``) need ``Authorization: Bearer
<token>``: none -> 401 (with ``WWW-Authenticate: Bearer``), a wrong one -> 403. The comparison
runs in constant time (:func:`hmac.compare_digest`). ``/v1/predict`` and the read endpoints
stay open. Unset (or empty), nothing is checked.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping

from fastapi import HTTPException, Request

ENV_VAR = "FLYWHEEL_API_TOKEN"


class BearerAuth:
    """A FastAPI dependency checking the bearer token; a no-op when no token is configured."""

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

    async def __call__(self, request: Request) -> None:
        self.check(request.headers.get("authorization"))
