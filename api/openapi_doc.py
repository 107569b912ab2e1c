"""Amendments to the generated OpenAPI document, for what FastAPI cannot see by itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI


def amend_openapi(app: FastAPI, amend: Callable[[dict[str, Any]], None]) -> None:
    """Have ``amend`` change ``app``'s OpenAPI document once, when it is first built (the
    document is cached on the app; amendments installed one after another all apply)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            amend(build())
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]
