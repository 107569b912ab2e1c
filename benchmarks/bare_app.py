"""Baselines for benchmarks/api_load.py, served by the same uvicorn as hwnas.

``app``: a raw ASGI callable (no framework, no database): the ceiling uvicorn gives any
Python HTTP service on this machine. ``fastapi_app``: FastAPI with the same two routes as
the hwnas endpoints under test, each answering a fixed object (POST validates a small
body) from an ``async`` handler (FastAPI's fastest path: no thread-pool hop), so the ratio
to it prices what hwnas itself adds: the database, validation of a job spec, dispatch, the
response schema.

GET answers a fixed JSON object; POST reads the body and answers 202 with a fixed object.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response
from pydantic import BaseModel

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


fastapi_app = FastAPI()


class Spec(BaseModel):
    supernet: str
    device: str
    budget: dict[str, int]


@fastapi_app.get("/v1/jobs/{job_id}")
async def get_job(job_id: str) -> Response:
    return Response(BODY, media_type="application/json")


@fastapi_app.post("/v1/jobs", status_code=202)
async def post_job(spec: Spec) -> Response:
    return Response(BODY, status_code=202, media_type="application/json")
