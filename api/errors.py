"""The one place where hwnas errors become HTTP answers."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from core.errors import (
    Conflict,
    HwnasError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PluginError,
    ServiceUnavailable,
    StorageError,
    Unauthenticated,
)

log = logging.getLogger(__name__)

STATUS_OF: dict[type[HwnasError], int] = {
    InvalidInput: 422,
    NotFound: 404,
    Unauthenticated: 401,
    Conflict: 409,
    PayloadTooLarge: 413,
    StorageError: 503,
    ServiceUnavailable: 503,
    # the operator's plugin configuration is broken: a server fault, with its message shown
    PluginError: 500,
}


def status_of(exc: HwnasError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]  # type: ignore[index]
    return 500


async def _hwnas_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HwnasError)
    return error_response(exc)


def error_response(exc: HwnasError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The answer to ``exc`` (also for the ASGI middleware of ``api.auth``, which runs
    outside FastAPI's exception handlers). Every JSON error answer has ``message`` (what a
    person reads, naming the field where one is at fault), like the 422s of request
    validation and the framework's 404/405 below; ``detail`` and ``error`` (the exception's
    class) are there too; so does a 500 of an unhandled exception (``_unhandled``)."""
    detail = str(exc)
    body: dict[str, object] = {"detail": detail, "error": type(exc).__name__, "message": detail}
    if isinstance(exc, InvalidInput) and exc.field:
        body["field"] = exc.field
        if not detail.startswith(exc.field):
            body["message"] = f"{exc.field}: {detail}"
    return JSONResponse(body, status_code=status_of(exc), headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """422 whose ``message`` names each offending field and what it allows."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    parts = []
    for error in errors:
        location = ".".join(str(p) for p in error["loc"] if p not in ("body", "query", "path"))
        parts.append(f"{location or 'body'}: {error['msg'].removeprefix('Value error, ')}")
    clean = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]
    return JSONResponse({"detail": clean, "message": "; ".join(parts)}, status_code=422)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    """The framework's own errors (no such path: 404, wrong method: 405), with a message."""
    assert isinstance(exc, HTTPException)
    body = {"detail": exc.detail, "message": str(exc.detail)}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _client_gone(request: Request, _exc: Exception) -> Response:
    """The client closed the connection before its whole body arrived: nobody reads an
    answer, and it is no server error (it was logged as an unhandled one, with a traceback,
    which monitoring counts as a 500)."""
    log.info("client disconnected during %s %s before its body arrived", request.method,
             request.url.path)  # fmt: skip
    return Response(status_code=400)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not the client's fault: 500 in the same JSON shape, with a reference to find
    the traceback in the server's log; the exception's own text (which may hold internals)
    is not sent. Starlette calls this from its outermost middleware and re-raises after, so
    the server logs the traceback right below this line (not repeated here)."""
    reference = uuid.uuid4().hex[:12]
    log.error("unhandled error %s in %s %s: %s: %s", reference, request.method,
              request.url.path, type(exc).__name__, exc)  # fmt: skip
    message = f"internal server error (reference {reference} in the server's log)"
    body = {"detail": message, "error": "InternalServerError", "message": message}
    return JSONResponse(body, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(HwnasError, _hwnas_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unhandled)
