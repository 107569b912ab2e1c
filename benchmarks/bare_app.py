"""The baseline for benchmarks/api_load.py: a bare ASGI app under the same uvicorn.

GET answers a fixed JSON object; POST reads the body and answers 202 with a fixed object.
No framework, no database: the ceiling this machine gives any Python HTTP service.
"""

from __future__ import annotations

from typing import Any

BODY = b'{"id":"0123456789abcdef0123456789abcdef","status":"queued"}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # drain the request body
        message = await receive()
        more = message.get("more_body", False)
    status = 202 if scope["method"] == "POST" else 200
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})
