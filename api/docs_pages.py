"""The API's documentation pages, ``/docs`` (Swagger UI) and ``/redoc``, with their scripts
served by this server.

FastAPI's own pages load Swagger UI and ReDoc from a CDN: on a machine without internet
access (where a device worker and its API often run) they stayed blank. The scripts and
styles here are the copies the ``fastapi-offline`` package ships (Swagger UI 5, ReDoc),
under ``DOCS_STATIC``; the pages are built by FastAPI's own functions, pointed at them. Like
the pages, the files are open without an API key (``api.auth``).
"""

from __future__ import annotations

from importlib.resources import files
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL, REDOC_URL, OAUTH2_REDIRECT_URL = "/docs", "/redoc", "/docs/oauth2-redirect"
#: Where the pages' scripts, styles and icon are served.
DOCS_STATIC = "/docs-static"


def add_docs_pages(app: FastAPI) -> None:
    """Serve ``/docs`` and ``/redoc`` on ``app`` (made with ``docs_url=None`` and
    ``redoc_url=None``) with their files from this server."""
    assets = str(files("fastapi_offline") / "static")
    app.mount(DOCS_STATIC, StaticFiles(directory=assets), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        here = _root(request)
        return get_swagger_ui_html(
            openapi_url=here + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=here + OAUTH2_REDIRECT_URL,
            swagger_js_url=f"{here}{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{here}{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{here}{DOCS_STATIC}/favicon.png",
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        here = _root(request)
        return get_redoc_html(
            openapi_url=here + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{here}{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{here}{DOCS_STATIC}/favicon.png",
            with_google_fonts=False,
        )


def _root(request: Request) -> str:
    """The path the API is served under: ``HWNAS_PUBLIC_URL``'s where the operator set it
    (a proxy that strips it, before ``hwnas serve``, which sets no root path), else the
    request's ``root_path``; nothing at the host's root."""
    settings = getattr(request.app.state, "settings", None)
    if settings is not None and settings.public_url:
        return urlsplit(settings.public_url).path.rstrip("/")
    return str(request.scope.get("root_path", "")).rstrip("/")
