"""api.hot_routes: the hot routes answer exactly as FastAPI's routing answers them.

Each test runs the same requests through the app with its hot routes and through the same
app built without them (``create_app(hot_routes=False)``), on one database, and compares
status, headers and body."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Response
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.routing import compile_path

from api.app import HOT_ENDPOINTS, create_app
from api.hot_routes import HotRoutes, hot_routes_of
from api.presenters import pareto_point
from api.routes import jobs as jobs_routes
from core.settings import Settings

from ..conftest import embedded_settings
from .helpers import job_spec

# fields a new job gets from the moment and order it was stored in
_NEW_JOB = re.compile(r'"(id|url|created_at)":"[^"]*"')


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"embedded_devices": "none"})  # nothing runs jobs


@pytest.fixture
def both(settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    """(hot, plain) clients of two apps on one database; errors answered, not raised."""
    hot = TestClient(create_app(settings), raise_server_exceptions=False)
    plain = TestClient(create_app(settings, hot_routes=False), raise_server_exceptions=False)
    with hot, plain:
        yield hot, plain


def _same(hot: httpx.Response, plain: httpx.Response, *, new_job: bool = False) -> None:
    def body(response: httpx.Response) -> str:
        text = response.text
        return _NEW_JOB.sub(r'"\1":"..."', text) if new_job else text

    assert hot.status_code == plain.status_code, (hot.text, plain.text)
    if new_job:  # its length may differ with its time stamp
        assert list(hot.headers.keys()) == list(plain.headers.keys())
        assert hot.headers["content-type"] == plain.headers["content-type"]
    else:
        assert hot.headers.items() == plain.headers.items()
    assert body(hot) == body(plain)


def test_a_job_poll_is_the_same_byte_for_byte(
    both: tuple[TestClient, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    routed = []  # whether the app's router saw each poll (it marks the scope)
    real = jobs_routes.loop_reads

    def spy(request: Request) -> Any:
        routed.append("router" in request.scope)
        return real(request)

    monkeypatch.setattr(jobs_routes, "loop_reads", spy)
    hot, plain = both
    job = plain.post("/v1/jobs", json=job_spec()).json()
    _same(hot.get(f"/v1/jobs/{job['id']}"), plain.get(f"/v1/jobs/{job['id']}"))
    _same(hot.get(f"/v1/jobs/{job['id']}?x=1"), plain.get(f"/v1/jobs/{job['id']}?x=1"))
    assert routed == [False, True, False, True]


def test_a_submission_is_answered_the_same(both: tuple[TestClient, TestClient]) -> None:
    hot, plain = both
    answers = [client.post("/v1/jobs", json=job_spec(seed=3)) for client in (hot, plain)]
    assert answers[0].status_code == 202
    _same(*answers, new_job=True)
    stored = hot.get(answers[0].json()["url"].removeprefix("http://testserver")).json()
    assert stored == answers[0].json()


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/v1/jobs/no-such-job", {}),
        ("GET", "/v1/jobs/", {}),
        ("HEAD", "/v1/jobs/no-such-job", {}),
        ("POST", "/v1/jobs", {"content": b"{not json"}),
        ("POST", "/v1/jobs", {"content": b""}),
        ("POST", "/v1/jobs", {"content": json.dumps(job_spec()).encode()}),  # no content type
        ("POST", "/v1/jobs", {"json": job_spec(supernet="no-such-supernet")}),
        ("POST", "/v1/jobs", {"json": job_spec(budget={"evaluations": float("nan")})}),
        ("PUT", "/v1/jobs", {"json": job_spec()}),
        ("DELETE", "/v1/jobs/abc", {}),
    ],
)
def test_errors_are_the_apps_own(
    both: tuple[TestClient, TestClient], method: str, path: str, kwargs: dict[str, Any]
) -> None:
    hot, plain = both
    if "json" in kwargs:  # httpx refuses NaN in json=; send the text Python writes
        kwargs = {"content": json.dumps(kwargs["json"]).encode(), "headers": _JSON}
    _same(hot.request(method, path, **kwargs), plain.request(method, path, **kwargs))


_JSON = {"content-type": "application/json"}


def test_an_unexpected_error_is_a_500_in_the_same_shape(
    both: tuple[TestClient, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        async def cached(self, *_args: object) -> bytes:
            raise RuntimeError("a bug")

    monkeypatch.setattr(jobs_routes, "loop_reads", lambda _request: Broken())
    hot, plain = both
    answers = [client.get("/v1/jobs/abc") for client in (hot, plain)]
    assert [a.status_code for a in answers] == [500, 500]
    messages = [a.json()["message"] for a in answers]
    assert all(m.startswith("internal server error (reference ") for m in messages)
    assert answers[0].headers.items() == answers[1].headers.items()


def test_behind_a_proxy_root_path_the_job_url_keeps_it(settings: Settings) -> None:
    with TestClient(create_app(settings), root_path="/hwnas") as client:
        job = client.post("/v1/jobs", json=job_spec()).json()
        assert job["url"] == f"http://testserver/hwnas/v1/jobs/{job['id']}"
        assert client.get(f"/v1/jobs/{job['id']}").json() == job


def test_api_keys_are_checked_before_a_hot_route(settings: Settings) -> None:
    key = "k" * 20
    with TestClient(create_app(settings.model_copy(update={"api_keys": key}))) as client:
        assert client.get("/v1/jobs/abc").status_code == 401
        assert client.post("/v1/jobs", json=job_spec()).status_code == 401
        headers = {"Authorization": f"Bearer {key}"}
        assert client.post("/v1/jobs", json=job_spec(), headers=headers).status_code == 202


def test_each_hot_route_is_the_first_route_to_match_its_paths(settings: Settings) -> None:
    """Starlette answers with the first route that matches; a hot route answered before the
    app's routing must not take a request an earlier route would have answered."""
    app = create_app(settings)
    hot = hot_routes_of(app, HOT_ENDPOINTS)
    assert {route.endpoint for route in hot} == set(HOT_ENDPOINTS)
    for route in hot:
        path = route.pattern.pattern.removeprefix("^").removesuffix("$")
        path = re.sub(r"\(\?P<\w+>[^)]*\)", "some-id", path)
        for method in route.methods:
            first = next(
                context
                for context in iter_route_contexts(app.routes)
                if context.path
                and method in (context.methods or ())
                and compile_path(context.path)[0].match(path)
            )
            assert first.endpoint is route.endpoint, (method, path, first.path)


def test_hot_endpoints_must_exist_and_be_async(settings: Settings) -> None:
    app = create_app(settings)

    async def not_routed() -> None: ...

    def blocking() -> None: ...

    with pytest.raises(ValueError, match="no route for hot endpoints"):
        HotRoutes(app, api=app, endpoints=[not_routed])
    with pytest.raises(ValueError, match="must be async"):
        HotRoutes(app, api=app, endpoints=[blocking])


def test_route_settings_only_routing_applies_are_refused() -> None:
    """Dependencies and body limits run in FastAPI's routing only; a hot route would skip
    them (an API-key dependency above all), so such a route cannot be made hot."""

    async def endpoint(request: Request) -> None: ...

    async def dependency() -> None: ...

    for settings in ({"dependencies": [Depends(dependency)]}, {"max_body_size": 10}):
        router = APIRouter()
        router.add_api_route("/x", endpoint, methods=["GET"])
        api = FastAPI()
        api.include_router(router, **settings)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="dependencies or a body limit"):
            hot_routes_of(api, [endpoint])


def test_exception_handlers_by_status_code_or_not_async_are_refused(settings: Settings) -> None:
    async def by_code(request: Request, exc: Exception) -> Response:
        return Response(status_code=404)

    def blocking(request: Request, exc: Exception) -> Response:
        return Response(status_code=500)

    for key, handler in ((404, by_code), (KeyError, blocking)):
        app = create_app(settings)
        app.add_exception_handler(key, handler)
        with pytest.raises(ValueError, match="exception handlers"):
            HotRoutes(app, api=app, endpoints=HOT_ENDPOINTS)


def test_with_fastapis_telemetry_on_every_request_takes_the_routing(settings: Settings) -> None:
    """FastAPI marks the scope when its OpenTelemetry is on; the route is then named in the
    request's span and metrics only if the routing answers it."""
    app = create_app(settings)
    passed: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        passed.append(scope["path"])

    hot = HotRoutes(inner, api=app, endpoints=HOT_ENDPOINTS)
    scope = {"type": "http", "method": "GET", "path": "/v1/jobs/abc", "root_path": ""}

    async def call() -> None:
        await hot({**scope, "fastapi.telemetry": object()}, None, None)  # type: ignore[arg-type]

    asyncio.run(call())
    assert passed == ["/v1/jobs/abc"]


def _spied_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """How each poll reads its job from now on: "read", or "memo" (memoised)."""
    ways: list[str] = []
    real = jobs_routes.loop_reads

    class Spy:
        def __init__(self, reads: Any) -> None:
            self.reads = reads

        async def __call__(self, *args: Any) -> Any:
            ways.append("read")
            return await self.reads(*args)

        async def cached(self, *args: Any) -> Any:
            ways.append("memo")
            return await self.reads.cached(*args)

    monkeypatch.setattr(jobs_routes, "loop_reads", lambda request: Spy(real(request)))
    return ways


def test_a_poll_under_a_long_host_is_read_not_memoised(
    both: tuple[TestClient, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Job bodies hold the base URL, which the client's Host header chooses: memoising
    them under any Host would let a client fill the server's memory."""
    ways = _spied_reads(monkeypatch)
    hot, _ = both
    job = hot.post("/v1/jobs", json=job_spec()).json()
    host = "h" * 300 + ".example"
    polled = hot.get(f"/v1/jobs/{job['id']}", headers={"host": host}).json()
    assert polled["url"] == f"http://{host}/v1/jobs/{job['id']}"
    hot.get(f"/v1/jobs/{job['id']}")
    assert ways == ["read", "memo"]


def test_the_public_url_names_the_jobs_whatever_host_the_client_says(tmp_path: Path) -> None:
    """The Host header is the client's: with ``HWNAS_PUBLIC_URL`` set, job URLs, the
    Location header and the front's export URLs are built on it instead (routed and hot
    routes alike)."""
    base = "https://nas.example.com/hwnas"
    settings = embedded_settings(tmp_path, public_url=base + "/", embedded_devices="none")
    evil = {"host": "evil.example"}
    with TestClient(create_app(settings)) as client:
        posted = client.post("/v1/jobs", json=job_spec(), headers=evil)
        url = f"{base}/v1/jobs/{posted.json()['id']}"
        assert posted.headers["location"] == posted.json()["url"] == url
        assert client.get(f"/v1/jobs/{posted.json()['id']}", headers=evil).json()["url"] == url
        assert [j["url"] for j in client.get("/v1/jobs", headers=evil).json()["data"]] == [url]
        scope = {
            "type": "http",
            "app": client.app,
            "headers": [(b"host", b"evil.example")],
            "scheme": "http",
            "server": ("evil.example", 80),
            "root_path": "",
            "path": "/",
        }
        point = SimpleNamespace(
            job_id="j1",
            subnet_id="r28-k3/e4",
            arch={},
            metrics={},
            details={},
            feasible=True,
            on_front=True,
            seconds=0.0,
        )
        exported = pareto_point(point, Request(scope), exportable=True).export_url  # type: ignore[arg-type]
        assert exported == f"{base}/v1/jobs/j1/subnets/r28-k3%2Fe4/export?format=onnx"


@pytest.mark.parametrize("public_url", ["", "https://nas.example.com/hwnas"])
def test_a_path_with_or_without_a_final_slash_is_redirected_on_the_public_url(
    tmp_path: Path, public_url: str
) -> None:
    """``/v1/jobs/`` is redirected to ``/v1/jobs``, the path's escapes and the query kept:
    on ``HWNAS_PUBLIC_URL`` where it is set (Starlette's own redirect names the client's
    Host); a path no route takes is a 404 either way."""
    settings = embedded_settings(tmp_path, public_url=public_url, embedded_devices="none")
    evil = {"host": "evil.example"}
    base = public_url or "http://evil.example"
    with TestClient(create_app(settings)) as client:
        for path, to in [("/v1/jobs/?limit=2&status=queued", "/v1/jobs?limit=2&status=queued"),
                         ("/v1/supernets/", "/v1/supernets"),
                         ("/healthz//", "/healthz"),
                         ("/v1/jobs/x%3Fy%23z/", "/v1/jobs/x%3Fy%23z"),
                         ("/v1/jobs/?q=%C3%A9&r=a%26b", "/v1/jobs?q=%C3%A9&r=a%26b")]:  # fmt: skip
            moved = client.get(path, headers=evil, follow_redirects=False)
            assert moved.status_code == 307 and moved.headers["location"] == base + to
        raw = client.get("/v1/jobs/?q=é", headers=evil, follow_redirects=False)  # sent as is
        assert raw.headers["location"] == base + "/v1/jobs?q=%C3%A9"
        if public_url:  # (Starlette's own gives "%" alone for a %25, U+FFFD for a %FF)
            for sent in ("a%25b", "a%FFb"):
                escaped = client.get(f"/v1/jobs/{sent}/", headers=evil, follow_redirects=False)
                assert escaped.headers["location"] == f"{base}/v1/jobs/{sent}"
        posted = client.post("/v1/jobs/", json=job_spec(), headers=evil, follow_redirects=False)
        assert posted.status_code == 307 and posted.headers["location"] == base + "/v1/jobs"
        missing = client.get("/v1/nothing/", headers=evil, follow_redirects=False)
        assert missing.status_code == 404 and missing.json()["message"] == "Not Found"
        assert client.get("/", headers=evil).status_code == 404


def test_a_poll_under_a_long_public_url_is_memoised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's HWNAS_PUBLIC_URL is one base for every poll, however long."""
    base = "https://nas.example.com/" + "p" * 300
    settings = embedded_settings(tmp_path, public_url=base, embedded_devices="none")
    ways = _spied_reads(monkeypatch)
    with TestClient(create_app(settings)) as client:
        job = client.post("/v1/jobs", json=job_spec()).json()
        for _ in range(2):
            polled = client.get(f"/v1/jobs/{job['id']}", headers={"host": "h" * 300}).json()
            assert polled["url"] == f"{base}/v1/jobs/{job['id']}"
    assert ways == ["memo", "memo"]
