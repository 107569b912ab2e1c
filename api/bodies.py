"""JSON request bodies validated straight from their bytes, for the hot POST route.

FastAPI's own body path solves the body as a dependency, checks the content type through
``email.message``, parses with the standard library's ``json`` and then validates the
resulting dict: for a job submission, more of the event loop's time than the handler
itself. ``json_body`` reads the bytes once and validates them in pydantic's core
(``model_validate_json``); errors are ``RequestValidationError``s with locations under
``body``, as FastAPI raises them, so ``api.errors`` answers them the same way. Differences
from FastAPI's path, all 422 answers: invalid JSON is pydantic's error (its message gives
line and column; FastAPI gave "JSON decode error" with the offset as a location), and a
body that is not UTF-8 or nests too deep is 422 ``json_invalid`` where FastAPI answered 400.
A route that uses it declares ``openapi_extra=json_body_doc(Model)``, and
``document_json_bodies`` puts those models among the OpenAPI components, as a declared body
parameter would.

A validator that reads files (a job's ``validation_data``: a directory of images is walked)
must not run on the event loop, where every other request would wait for the disk. Such a
validator asks ``files_checked_later(info)`` first: on the loop it answers True and the
validator skips its check; ``json_body`` then validates the whole body again on a worker
thread, where it answers False. Bodies that name no file (nearly all) never leave the loop.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError, ValidationInfo
from starlette.concurrency import run_in_threadpool

from core.errors import PayloadTooLarge

from .openapi_doc import amend_openapi

Model = TypeVar("Model", bound=BaseModel)

_DOCUMENTED: dict[str, type[BaseModel]] = {}
_SCHEMA_REF = "#/components/schemas/{model}"
_ERRORS = "HTTPValidationError"


#: The largest body ``json_body`` reads (a job's is a few hundred bytes); a larger one is
#: refused with 413 before it is read whole.
MAX_BODY_BYTES = 1 << 20


async def json_body(request: Request, model: type[Model]) -> Model:
    """The request's JSON body as ``model``; 422 (``RequestValidationError``) otherwise,
    413 (``PayloadTooLarge``) over ``MAX_BODY_BYTES``."""
    raw = await _read_capped(request)
    if not raw:
        raise _invalid([{"type": "missing", "loc": (), "msg": "Field required"}])
    if not _is_json(request.headers.get("content-type")):
        raise _invalid(
            [
                {
                    "type": "content_type",
                    "loc": (),
                    "msg": "send the body as JSON, with the header Content-Type: application/json",
                }
            ]
        )
    on_loop = {_FILES_LATER: True}
    try:
        body = _validate(raw, model, on_loop)
    except RequestValidationError:
        if not on_loop.get(_SKIPPED):
            raise
    else:
        if not on_loop.get(_SKIPPED):
            return body
    # A file check was skipped: its answer (and the full list of errors) from a thread.
    return await run_in_threadpool(_validate, raw, model, {})


#: ``json_body``'s validation context keys (see ``files_checked_later``).
_FILES_LATER, _SKIPPED = "hwnas_files_later", "hwnas_file_check_skipped"


def files_checked_later(info: ValidationInfo) -> bool:
    """For a validator that reads files: True when it runs on the event loop from
    ``json_body``, which then validates the body again on a worker thread (where this is
    False); the validator then returns its value unchecked. False outside ``json_body``."""
    context = info.context
    if isinstance(context, dict) and context.get(_FILES_LATER):
        context[_SKIPPED] = True
        return True
    return False


def _validate(raw: bytes, model: type[Model], context: dict[str, Any]) -> Model:
    try:
        body = model.model_validate_json(raw, context=context)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            return _validate_other_encoding(raw, model, exc, context)
        raise _invalid(exc.errors(include_url=False)) from None
    _refuse_repeated_keys(raw)
    return body


def _refuse_repeated_keys(raw: bytes) -> None:
    """422 for a key given twice in one JSON object: a parser keeps the last one, so
    ``{"accuracy": "max", "accuracy": "min"}`` ran a job minimising accuracy (multi-objective
    audit 33). About 6 us for a job's body, parsed a second time."""
    repeated: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found = dict(pairs)
        if len(found) < len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    repeated.append(key)
                seen.add(key)
        return found

    json.loads(raw, object_pairs_hook=pairs_hook)
    if repeated:
        names = ", ".join(dict.fromkeys(map(repr, repeated)))
        message = f"{names} given twice in one object (the last would win): give each key once"
        raise _invalid([{"type": "duplicate_key", "loc": (), "msg": message}])


async def _read_capped(request: Request) -> bytes:
    """The body's bytes, read no further than ``MAX_BODY_BYTES`` (its declared length is
    checked first; a chunked body is counted as it arrives)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is over {MAX_BODY_BYTES // 1024} KiB")


def _validate_other_encoding(
    raw: bytes, model: type[Model], error: ValidationError, context: dict[str, Any]
) -> Model:
    """pydantic parses bare UTF-8 only; the standard library also reads a body that starts
    with a UTF-8 byte order mark (some Windows clients send one) or is UTF-16/32, as
    FastAPI's path did. Only for bodies pydantic could not parse, so it costs nothing
    otherwise; the first error stands if the standard library cannot parse it either."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise _invalid(error.errors(include_url=False)) from None
    try:
        body = model.model_validate(data, context=context)
    except ValidationError as exc:
        raise _invalid(exc.errors(include_url=False)) from None
    _refuse_repeated_keys(raw)
    return body


def _is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters ignored."""
    if not content_type:
        return False
    kind = content_type.partition(";")[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def _invalid(errors: list[Any]) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors])


def json_body_doc(
    model: type[BaseModel], media_types: tuple[str, ...] = ("application/json",)
) -> dict[str, Any]:
    """``openapi_extra`` for a route whose body ``json_body`` reads as ``model``, sent as
    any of ``media_types``."""
    _DOCUMENTED[model.__name__] = model

    def json_of(name: str, types: tuple[str, ...] = ("application/json",)) -> dict[str, Any]:
        return {kind: {"schema": {"$ref": _SCHEMA_REF.format(model=name)}} for kind in types}

    return {
        "requestBody": {"content": json_of(model.__name__, media_types), "required": True},
        # FastAPI's own component, present while any route declares a parameter
        "responses": {"422": {"description": "Validation Error", "content": json_of(_ERRORS)}},
    }


def document_json_bodies(app: FastAPI) -> None:
    """Add the models of ``json_body_doc`` routes to ``app``'s OpenAPI components."""

    def amend(spec: dict[str, Any]) -> None:
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for name, model in _DOCUMENTED.items():
            schema = model.model_json_schema(ref_template=_SCHEMA_REF)
            schemas.update(schema.pop("$defs", {}))
            schemas[name] = schema

    amend_openapi(app, amend)
