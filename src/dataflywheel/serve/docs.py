"""``GET /docs``: Swagger UI from files shipped in the package (``static/swagger-ui``), so the
page works without network access (FastAPI's default loads it from a CDN).

The assets are served at ``/docs/assets``; the page reads the schema from ``/openapi.json``.
ReDoc (``/redoc``), which also loads its script and fonts from the network, is not served.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from dataflywheel.serve.auth import AccessMatrix

ASSETS = Path(__file__).resolve().parent / "static" / "swagger-ui"
DOCS_PATH = "/docs"
ASSETS_PATH = f"{DOCS_PATH}/assets"
OAUTH2_REDIRECT_PATH = f"{DOCS_PATH}/oauth2-redirect"


def add_docs_routes(app: FastAPI, access: AccessMatrix) -> None:
    """Serve Swagger UI at ``/docs`` from the packaged assets (create ``app`` with
    ``docs_url=None, redoc_url=None`` so FastAPI's CDN-backed pages are not declared); the
    page, its assets and the schema are ``read`` routes of ``access``."""
    for path in (DOCS_PATH, f"{ASSETS_PATH}/*", OAUTH2_REDIRECT_PATH, app.openapi_url or "/openapi.json"):
        access.register(path, "read")
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_PATH}",
            swagger_ui_parameters={"validatorUrl": None},  # no call to the online validator
        )

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
