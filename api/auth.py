"""API keys: who may call the API. Off unless the operator sets ``HWNAS_API_KEYS``.

With keys set, every request (HTTP or WebSocket) except the health check and the API's own
documentation (``OPEN_PATHS``) must carry ``Authorization: Bearer <key>`` with one of them;
any other HTTP request gets 401 (through ``api.errors``, with ``WWW-Authenticate: Bearer``),
a WebSocket is closed with code 1008. Keys are compared in constant time. A
plain ASGI middleware rather than a FastAPI dependency: it costs a header scan per request,
where a dependency is solved per request (~100 us, see ``api.deps``); without keys it is
not installed at all (the embedded default, listening on 127.0.0.1). Keys are shared
secrets for a service behind TLS (a proxy's), not user accounts: every key may do
everything, unless ``HWNAS_JOB_VISIBILITY=own`` keeps each key to the jobs it submitted
(``api.deps.owner_of``; ``HWNAS_ADMIN_API_KEYS`` see every job). Each request that
changes something (not GET, HEAD or OPTIONS) is logged with the key's label
(``key_label``: the start of its SHA-256, which names it without giving it), so that a job
created, cancelled or deleted can be traced to the team holding the key.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from core.errors import InvalidInput, Unauthenticated, printable
from core.redact import key_label
from core.settings import Settings

from .docs_pages import DOCS_STATIC, DOCS_URL, OAUTH2_REDIRECT_URL, REDOC_URL
from .errors import error_response
from .hot_routes import route_path
from .openapi_doc import amend_openapi

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
OPEN_PATHS = frozenset({HEALTH_PATH, DOCS_URL, OAUTH2_REDIRECT_URL, REDOC_URL, "/openapi.json"})
#: The request state's flag for a health check sent without a valid key (keys set): it is
#: answered with its status alone, not the devices, broker or database it names.
ANONYMOUS = "hwnas_anonymous"
#: The request state's label of the key a request came with (``key_label``; absent without
#: keys): a job records it (``Job.submitted_by``).
KEY_LABEL = "hwnas_key_label"
#: The request state's flag for a request with one of ``HWNAS_ADMIN_API_KEYS``.
ADMIN = "hwnas_admin"
MIN_KEY_LENGTH = 16
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="hwnas"'}
_SCHEME = "apiKey"
_DOC = "One of the server's HWNAS_API_KEYS, sent as 'Authorization: Bearer <key>'."


def parse_api_keys(value: str, variable: str = "HWNAS_API_KEYS") -> list[bytes]:
    """``HWNAS_API_KEYS`` (or ``variable``: comma separated) as bytes, each once; refused
    at start-up: a short key, an empty entry (``"$TEAM_A_KEY,$TEAM_B_KEY"`` with secrets
    that never reached the environment is ``","``: it served with no key at all, tenancy
    audit 33), and two keys of one label (``key_label``: which key did what would be
    ambiguous)."""
    if not value.strip():
        return []
    entries = [part.strip() for part in value.split(",")]
    if "" in entries:
        raise InvalidInput(
            f"{variable}: entry {entries.index('') + 1} of {len(entries)} is empty (a "
            "variable that did not expand?): list the keys separated by commas, or set it "
            "to nothing for a server without keys",
            field=variable,
        )
    keys = list(dict.fromkeys(entries))  # a key listed twice is one key
    for key in keys:
        if len(key) < MIN_KEY_LENGTH or not (key.isascii() and key.isprintable()) or " " in key:
            raise InvalidInput(
                f"{variable}: every key must be at least {MIN_KEY_LENGTH} printable ASCII "
                "characters, no spaces "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)",
                field=variable,
            )
    encoded = [key.encode() for key in keys]
    _one_label_each(encoded, variable)
    return encoded


def _one_label_each(keys: list[bytes], variable: str) -> None:
    labels = [key_label(key) for key in keys]
    if len(set(labels)) < len(labels):  # about 1 in 4e9 for a pair of keys
        raise InvalidInput(
            f"{variable}: two keys share a label (the start of their SHA-256, which the "
            "log and each job's submitted_by name them by): generate another key",
            field=variable,
        )


@dataclass(frozen=True)
class ServerKeys:
    """The keys a server takes, as its settings give them (``server_keys``)."""

    #: Every key it takes: ``HWNAS_API_KEYS``' then ``HWNAS_ADMIN_API_KEYS``' (none: open).
    keys: list[bytes]
    #: The labels of the keys that see every job (``HWNAS_ADMIN_API_KEYS``).
    admins: frozenset[str]
    #: Whether a key sees only the jobs it submitted (``HWNAS_JOB_VISIBILITY=own``).
    own_jobs_only: bool


def server_keys(settings: Settings) -> ServerKeys:
    """The server's keys; refused at start-up as ``parse_api_keys`` says, and where
    ``HWNAS_JOB_VISIBILITY=own`` has no key to tell whose a request is."""
    members = parse_api_keys(settings.api_keys)
    admins = parse_api_keys(settings.admin_api_keys, "HWNAS_ADMIN_API_KEYS")
    keys = list(dict.fromkeys(members + admins))
    _one_label_each(keys, "HWNAS_ADMIN_API_KEYS")
    own = settings.job_visibility == "own"
    if own and not keys:
        raise InvalidInput(
            "HWNAS_JOB_VISIBILITY=own needs API keys (HWNAS_API_KEYS): without them no "
            "request says whose it is",
            field="HWNAS_JOB_VISIBILITY",
        )
    return ServerKeys(keys, frozenset(key_label(key) for key in admins), own)


#: ``api.routes.jobs.REPLAYED`` as an ASGI message carries it: a keyed submission's answer
#: that names the job an earlier request created (its log line says so).
_REPLAYED = b"idempotent-replayed"
#: Requests that change nothing: not logged with their key.
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class ApiKeyMiddleware:
    """Lets a request through only with a valid key (``OPEN_PATHS`` always)."""

    def __init__(
        self, app: ASGIApp, keys: list[bytes], admins: frozenset[str] = frozenset()
    ) -> None:
        if not keys:
            raise ValueError("ApiKeyMiddleware needs at least one key")
        self.app = app
        self.keys = keys
        self.labels = [key_label(key) for key in keys]
        self.admins = admins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        static = path.startswith(DOCS_STATIC + "/") and scope.get("method") in ("GET", "HEAD")
        if path in OPEN_PATHS or static:
            if path == HEALTH_PATH:  # open, but its details only for a caller with a key
                scope.setdefault("state", {})[ANONYMOUS] = self._checked(scope)[0] is not None
            await self.app(scope, receive, send)
            return
        problem, label = self._checked(scope)
        if problem is None:
            state = scope.setdefault("state", {})
            state[KEY_LABEL], state[ADMIN] = label, label in self.admins
        if problem is None and scope.get("method", "GET") not in _READS:
            await self._logged(scope, receive, send, label)
        elif problem is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":  # none today; one added later is covered too
            await send({"type": "websocket.close", "code": 1008, "reason": problem})
        else:
            response = error_response(Unauthenticated(problem), headers=_CHALLENGE)
            await response(scope, receive, send)

    async def _logged(self, scope: Scope, receive: Receive, send: Send, label: str) -> None:
        """Pass a request that changes something, then log it with its key's label and
        the answer's status."""
        answer = ""

        async def sent(message: Any) -> None:
            nonlocal answer
            if message["type"] == "http.response.start":
                answer = str(message["status"])
                for name, value in message.get("headers", ()):
                    if name == b"location":  # a new job's: which job the key created
                        answer += f" {printable(value.decode('latin-1'), lines=False)}"
                    elif name == _REPLAYED:  # not created: the key's earlier job
                        answer += " (replayed)"
            await send(message)

        try:
            await self.app(scope, receive, sent)
        except BaseException:
            answer = answer or "500 (an unhandled error)"
            raise
        finally:
            path = printable(route_path(scope), lines=False)
            log.info("API key %s: %s %s -> %s", label, scope["method"], path, answer or "none")

    def _checked(self, scope: Scope) -> tuple[str | None, str]:
        """Why the request may not pass (None if it may), and the label of its key."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                token = token.strip()
                if scheme.lower() != b"bearer" or not token:
                    return "the Authorization header must be 'Bearer <API key>'", ""
                # every key compared (no early exit): the time taken says nothing of which
                hits = [hmac.compare_digest(token, key) for key in self.keys]
                if not any(hits):
                    return "the API key is not valid", ""
                return None, self.labels[hits.index(True)]
        return (
            "send an API key: the header 'Authorization: Bearer <key>' (one of the server's "
            "HWNAS_API_KEYS; the CLI sends --api-key or $HWNAS_API_KEY, HwnasClient its api_key)",
            "",
        )


def require_api_keys(app: FastAPI, keys: ServerKeys) -> None:
    """Install the middleware (``document_api_keys`` says so in the OpenAPI document)."""
    app.add_middleware(ApiKeyMiddleware, keys=keys.keys, admins=keys.admins)


def document_api_keys(app: FastAPI, *, required: bool) -> None:
    """The bearer scheme on every operation outside ``OPEN_PATHS``, with its 401, where the
    server has keys; declared optional where it has none (a client generated from a
    server without keys had no way to send one, nor a 401 to expect: audit 34)."""
    scheme = {
        "type": "http",
        "scheme": "bearer",
        "description": _DOC if required else f"{_DOC} This server has none: optional.",
    }
    unauthenticated = {
        "description": "no API key, or not one of the server's",
        "headers": {
            "WWW-Authenticate": {
                "schema": {"type": "string"},
                "example": _CHALLENGE["WWW-Authenticate"],
            }
        },
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorAnswer"}}},
    }

    def amend(spec: dict[str, Any]) -> None:
        spec.setdefault("components", {}).setdefault("securitySchemes", {})[_SCHEME] = scheme
        for path, operations in spec.get("paths", {}).items():
            if path not in OPEN_PATHS:
                for operation in operations.values():
                    operation["security"] = [{_SCHEME: []}] if required else [{}, {_SCHEME: []}]
                    if required:
                        operation.setdefault("responses", {})["401"] = unauthenticated

    amend_openapi(app, amend)
