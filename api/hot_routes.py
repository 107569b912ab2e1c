"""The routes clients call most, reached without FastAPI's per-request machinery.

Pollers read ``GET /v1/jobs/{id}`` and submitters send ``POST /v1/jobs`` far more often than
anything else. Their endpoints are already thin (a memoised read; a batched insert), so most
of a request's time on the event loop was the framework around them: Starlette's router
trying each route's pattern, FastAPI solving the endpoint's parameters, and the exception
and exit-stack layers wrapped around every call. Measured in-process (ASGI calls without a
server, 20 interleaved rounds of 500 polls of one job; submissions 20 at a time, 8 rounds of
500), minimum per request: a poll took 144 us through FastAPI's routing and 30 us here (the
endpoint's own work, a memo hit, is ~9 us), a submission 325 us against 227.

``HotRoutes`` is an ASGI middleware inside the app's other middleware (API keys are checked
first). For a request whose method and path match one of the hot routes it calls that
route's own endpoint, found among the app's routes (the same function, path pattern and
parameter conversion, so the two ways cannot drift apart), with a ``Request`` on the same
scope. An exception the endpoint raises is answered by the app's own handler for it
(``api.errors``), looked up as Starlette's exception middleware looks it up; one with no
handler goes on to the server-error middleware, as from a route. Everything else goes to
the app unchanged, and so is every request while FastAPI's own OpenTelemetry is on (a
tracer, meter or logger provider is configured), so that its spans and metrics name the
route. The OpenAPI document still comes from the routes themselves. Route settings that
only FastAPI's routing applies (dependencies, a body size limit) and exception handlers
keyed by status code or not ``async`` are refused when the middleware is built, rather
than silently skipped.

A hot route must be the first of the app's routes to match its paths (Starlette answers
with the first match): the jobs router is included first, and a test checks it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.convertors import Convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass(frozen=True)
class HotRoute:
    """One of the app's routes: its methods, its path's pattern and parameters, its endpoint."""

    methods: frozenset[str]
    pattern: re.Pattern[str]
    convertors: dict[str, Convertor[Any]]
    endpoint: Callable[..., Any]

    def path_params(self, scope: Scope) -> dict[str, Any] | None:
        """The path's parameters if this route answers the request, else None."""
        if scope["method"] not in self.methods:
            return None
        match = self.pattern.match(route_path(scope))
        if match is None:
            return None
        return {k: self.convertors[k].convert(v) for k, v in match.groupdict().items()}


def hot_routes_of(api: FastAPI, endpoints: Iterable[Callable[..., Any]]) -> list[HotRoute]:
    """The routes of ``api`` whose endpoint is one of ``endpoints``, as the app declares them
    (every included router's prefix applied)."""
    wanted = set(endpoints)
    if not all(inspect.iscoroutinefunction(endpoint) for endpoint in wanted):
        raise ValueError("hot endpoints must be async: they run on the event loop")
    routes = []
    for context in iter_route_contexts(api.routes):
        if context.endpoint in wanted and context.path and context.methods:
            if context.dependencies or getattr(context, "max_body_size", None) is not None:
                raise ValueError(  # they would be skipped here, auth above all
                    f"hot route {context.path} has dependencies or a body limit: "
                    "they run in FastAPI's routing only"
                )
            pattern, _, convertors = compile_path(context.path)
            routes.append(
                HotRoute(frozenset(context.methods), pattern, convertors, context.endpoint)
            )
    missing = wanted - {route.endpoint for route in routes}
    if missing:
        raise ValueError(f"no route for hot endpoints {sorted(e.__name__ for e in missing)}")
    return routes


def route_path(scope: Scope) -> str:
    """The request's path below the app's root path (what routes are matched against)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class HotRoutes:
    """Calls the endpoints of ``endpoints`` directly for the requests their routes match."""

    def __init__(self, app: ASGIApp, api: FastAPI, endpoints: Iterable[Callable[..., Any]]) -> None:
        self.app = app
        self.routes = hot_routes_of(api, endpoints)
        self.handlers = api.exception_handlers
        if not all(isinstance(k, type) for k in self.handlers) or not all(
            inspect.iscoroutinefunction(h) for h in self.handlers.values()
        ):
            raise ValueError(
                "hot routes look exception handlers up by class and await them: "
                "register async handlers by exception class only"
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # With FastAPI's OpenTelemetry on (a provider configured), the request goes the
        # whole way, so that its span and metrics name the route.
        if scope["type"] == "http" and scope.get("fastapi.telemetry") is None:
            for route in self.routes:
                params = route.path_params(scope)
                if params is not None:
                    scope["path_params"], scope["endpoint"] = params, route.endpoint
                    request = Request(scope, receive)
                    response = await self._answer(route, request)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _answer(self, route: HotRoute, request: Request) -> Response:
        try:
            response: Response = await route.endpoint(request=request, **request.path_params)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            response = await handler(request, exc)  # async: checked when built
        return response

    def _handler_for(self, exc: Exception) -> Callable[..., Any] | None:
        """The app's handler for ``exc``, nearest class first; not the catch-all for
        ``Exception``, which Starlette runs in its server-error middleware (outside this)."""
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in self.handlers:
                handler: Callable[..., Any] = self.handlers[cls]
                return handler
        return None
