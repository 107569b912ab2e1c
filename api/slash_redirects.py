"""Redirects of a path that differs from a route by its final slash (``/v1/jobs/``), built on
``HWNAS_PUBLIC_URL`` where the operator set it.

Starlette's router answers such a request with a 307 whose ``Location`` is built from the
request: its Host header, which the client chooses (a link to any host, handed back by the
API). With a public URL the router's own redirects are turned off, and a request no route
takes comes here instead: the same redirect (307, the other spelling of the path, the query
kept), its ``Location`` on the public URL; anything else is the router's 404 as before.
Without a public URL nothing changes: like job URLs, the redirect follows the request.
"""

from __future__ import annotations

from urllib.parse import quote, quote_from_bytes

from fastapi import FastAPI
from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Match, get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

_PATH_SAFE = "/:@!$&'()*+,;=~"  # RFC 3986 path characters besides unreserved ones
_QUERY_SAFE = _PATH_SAFE + "?%[]"  # and a query's escapes as they came


def redirect_slashes_to(app: FastAPI, public_url: str) -> None:
    """Build the router's slash redirects on ``public_url`` (no final slash); nothing if
    it is empty."""
    if not public_url:
        return
    router = app.router
    router.redirect_slashes = False
    router.default = _SlashRedirect(router.routes, router.default, public_url)


class _SlashRedirect:
    """The router's ``default`` (what answers a request no route matched)."""

    def __init__(self, routes: list[BaseRoute], fallback: ASGIApp, public_url: str) -> None:
        self._routes = routes  # the router's own list: routes added later are seen
        self._fallback = fallback
        self._public_url = public_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = get_route_path(scope)
        if scope["type"] == "http" and path != "/":
            other = path.rstrip("/") if path.endswith("/") else path + "/"
            moved = {**scope, "path": scope.get("root_path", "") + other}
            if any(route.matches(moved)[0] is not Match.NONE for route in self._routes):
                # the path and query as sent (a %3F stays one, a %FF too)
                path = _as_sent(scope) or quote(other, safe=_PATH_SAFE)
                query = quote_from_bytes(scope.get("query_string", b""), safe=_QUERY_SAFE)
                location = self._public_url + path + (f"?{query}" if query else "")
                await RedirectResponse(location)(scope, receive, send)
                return
        await self._fallback(scope, receive, send)


def _as_sent(scope: Scope) -> str | None:
    """The request's path as its bytes came (``raw_path``), after the root path, with its
    final slash added or removed; None when the server gives no raw path."""
    raw = scope.get("raw_path")
    if not isinstance(raw, bytes):
        return None
    root = scope.get("root_path", "").encode()
    if root and raw.startswith(root):
        raw = raw[len(root) :]
    other = raw.rstrip(b"/") if raw.endswith(b"/") else raw + b"/"
    return quote_from_bytes(other, safe=_PATH_SAFE + "%")
