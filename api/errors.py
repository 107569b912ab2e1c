"""The one place where hwnas errors become HTTP answers."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from core.errors import (
    Conflict,
    HwnasError,
    InvalidInput,
    LimitReached,
    NotFound,
    PayloadTooLarge,
    PluginError,
    ServiceUnavailable,
    StorageError,
    Unauthenticated,
    printable,
)

from .openapi_doc import amend_openapi

log = logging.getLogger(__name__)

STATUS_OF: dict[type[HwnasError], int] = {
    InvalidInput: 422,
    NotFound: 404,
    Unauthenticated: 401,
    Conflict: 409,
    LimitReached: 429,
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
    detail = printable(str(exc))  # a lone surrogate did not encode: a 500 (security audit 31)
    body: dict[str, object] = {"detail": detail, "error": type(exc).__name__, "message": detail}
    if isinstance(exc, InvalidInput) and exc.field:
        body["field"] = exc.field
        if not detail.startswith(exc.field):
            body["message"] = f"{exc.field}: {detail}"
    status = status_of(exc)
    if status == 503:  # the database or a service is away: a client may ask again later
        headers = {RETRY_AFTER: str(RETRY_AFTER_S), **(headers or {})}
        _unavailable.log(detail)
    return JSONResponse(body, status_code=status, headers=headers)


class _Throttled:
    """Logs a 503's reason at WARNING, each reason at most once per ``interval_s``, saying
    how many answers it gave meanwhile: the server's log said nothing of why every write
    was refused (a read-only database, a full disk: ops audit 29), only the access log's
    "503" lines; one line per answer would flood it while pollers ask."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._said: dict[str, tuple[float, int]] = {}  # reason -> (logged at, since then)

    def log(self, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            logged_at, since = self._said.get(reason, (-math.inf, 0))
            if now - logged_at < self.interval_s:
                self._said[reason] = (logged_at, since + 1)
                return
            if len(self._said) > 100:  # reasons that name ids or paths: keep it bounded
                self._said.clear()
            self._said[reason] = (now, 0)
        more = (
            f" (and {since} more such answers in the last {now - logged_at:.0f} s)" if since else ""
        )
        log.warning("answered 503: %s%s", reason, more)


#: 503s' reasons in the log (``_Throttled``).
_unavailable = _Throttled(interval_s=60.0)


#: What a 503 tells a client: ask again after this many seconds (a database restart).
RETRY_AFTER, RETRY_AFTER_S = "Retry-After", 5


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """422 whose ``message`` names each offending field and what it allows."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    clean = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]
    for error in clean:  # a lone surrogate (a file's name) did not encode: a 500
        error["msg"] = printable(str(error.get("msg", "")))
    message = printable(validation_message(errors))
    field = error_field(errors[0]) if errors else "body"
    body = {"detail": clean, "error": InvalidInput.__name__, "message": message, "field": field}
    return JSONResponse(body, status_code=422)


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """pydantic's errors as a 422's ``message`` says them: each offending field (its path in
    the body or query) and what it allows."""
    return "; ".join(f"{error_field(error)}: {error['msg'].removeprefix('Value error, ')}"
                     for error in errors)  # fmt: skip


def error_field(error: Mapping[str, Any]) -> str:
    """The field a pydantic error is about, as a dotted path ("body" for the whole body)."""
    location = ".".join(str(p) for p in error["loc"] if p not in ("body", "query", "path"))
    return location or "body"


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
             printable(request.url.path, lines=False))  # fmt: skip
    return Response(status_code=400)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not the client's fault: 500 in the same JSON shape, with a reference to find
    the traceback in the server's log; the exception's own text (which may hold internals)
    is not sent. Starlette calls this from its outermost middleware and re-raises after, so
    the server logs the traceback right below this line (not repeated here)."""
    reference = uuid.uuid4().hex[:12]
    log.error("unhandled error %s in %s %s: %s: %s", reference, request.method,
              printable(request.url.path, lines=False), type(exc).__name__, exc)  # fmt: skip
    message = f"internal server error (reference {reference} in the server's log)"
    body = {"detail": message, "error": "InternalServerError", "message": message}
    return JSONResponse(body, status_code=500)


class ErrorAnswer(BaseModel):
    """The body of every error answer but request validation's 422 (``ValidationAnswer``,
    whose ``detail`` is a list)."""

    detail: str = Field(description="what went wrong")
    message: str = Field(description="what a person reads; a 422 names the field at fault")
    error: str | None = Field(
        None, description="the error's class (absent on the framework's own 404 and 405)"
    )
    field: str | None = Field(None, description="the input at fault (a 422)")


class ValidationProblem(BaseModel):
    loc: list[str | int] = Field(description="where: 'body', 'query' or 'path', then the field")
    msg: str
    type: str = Field(description="pydantic's error type, e.g. 'missing', 'int_type'")


class ValidationAnswer(BaseModel):
    """A 422 of request validation: ``ErrorAnswer``'s fields, ``detail`` the list of
    problems (an HTTP-only integrator's client read two shapes, one lacking ``error``,
    ``field`` and, in the document, ``message``: audit 34)."""

    detail: list[ValidationProblem]
    message: str = Field(description="what a person reads: each field at fault and why")
    error: Literal["InvalidInput"]
    field: str = Field(description="the first input at fault ('body': the body as a whole)")


_MEANING = {
    404: "no such job, sub-network, device or path",
    409: "valid, but the job's state forbids it (finished, a calibration, a recorded table, "
    "weights or data changed since it measured)",
    413: "the body is over 1 MiB",
    429: "the API key has as many jobs queued or running as HWNAS_MAX_ACTIVE_JOBS_PER_KEY allows",
    422: "the request is invalid",
    500: "a bug: the answer gives a reference to the traceback in the server's log",
    503: "the database does not answer or is not migrated",
}


def error_answers(*codes: int) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=`` for the errors it may answer besides 422 and the 500 and
    503 every route may (``document_error_answers`` adds those)."""
    return {code: {"model": ErrorAnswer, "description": _MEANING[code]} for code in codes}


#: What a 503 declares besides its body.
_RETRY_HEADER = {
    RETRY_AFTER: {
        "description": "seconds to wait before asking again",
        "schema": {"type": "integer", "example": RETRY_AFTER_S},
    }
}


def document_error_answers(app: FastAPI) -> None:
    """Every operation's OpenAPI answers: 500 and 503 with ``ErrorAnswer`` (a 503 with its
    ``Retry-After``), and a 422 that is either ``ValidationAnswer`` or an ``ErrorAnswer``
    (``InvalidInput`` raised by a route itself: its ``detail`` is a string), in place of
    FastAPI's ``HTTPValidationError``, which lacks ``message``, ``error`` and ``field``."""
    ref = {"$ref": "#/components/schemas/ErrorAnswer"}
    either = {"anyOf": [{"$ref": "#/components/schemas/ValidationAnswer"}, ref]}

    def amend(spec: dict[str, Any]) -> None:
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("ErrorAnswer", ErrorAnswer.model_json_schema())
        validation = ValidationAnswer.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(validation.pop("$defs", {}))
        schemas["ValidationAnswer"] = validation
        for item in spec.get("paths", {}).values():
            for operation in item.values():
                answers = operation.setdefault("responses", {})
                for code in (500, 503):
                    answers.setdefault(
                        str(code),
                        {"description": _MEANING[code],
                         "content": {"application/json": {"schema": ref}}},
                    )  # fmt: skip
                answers["503"]["headers"] = _RETRY_HEADER
                body = answers.get("422", {}).get("content", {}).get("application/json")
                if body is not None and "schema" in body and body["schema"] != ref:
                    body["schema"] = either
        for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's, replaced
            schemas.pop(unused, None)

    amend_openapi(app, amend)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(HwnasError, _hwnas_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unhandled)
