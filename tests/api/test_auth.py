"""API keys (HWNAS_API_KEYS): off by default; when set, every API call needs one."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from api.app import create_app
from api.auth import parse_api_keys
from api.client import ClientError, HwnasClient
from core.errors import InvalidInput

from ..conftest import embedded_settings
from .helpers import job_spec

KEYS = ("k" * 16, "another-key-0123456789")


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[TestClient]:
    settings = embedded_settings(tmp_path, api_keys=",".join(KEYS))
    with TestClient(create_app(settings)) as client:
        yield client


def test_without_a_valid_key_every_api_call_is_401(secured: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": "k"}):
        for method, path in (("GET", "/v1/jobs"), ("GET", "/v1/devices"), ("POST", "/v1/jobs")):
            response = secured.request(method, path, headers=headers, json=job_spec())
            assert response.status_code == 401, (headers, path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            body = response.json()
            assert body["error"] == "Unauthenticated" and body["message"], body
    assert "send an API key" in secured.get("/v1/jobs").json()["message"]
    assert (
        "not valid"
        in secured.get("/v1/jobs", headers={"Authorization": "Bearer x"}).json()["message"]
    )


def test_any_configured_key_opens_the_api_and_health_and_docs_stay_open(
    secured: TestClient,
) -> None:
    for key in KEYS:
        headers = {"Authorization": f"bearer {key}"}  # the scheme is case-insensitive
        job = secured.post("/v1/jobs", json=job_spec(device="cpu-all"), headers=headers)
        assert job.status_code == 202, job.text
        polled = secured.get(f"/v1/jobs/{job.json()['id']}", headers=headers)
        assert polled.status_code == 200
    for path in ("/healthz", "/docs", "/openapi.json"):
        assert secured.get(path).status_code == 200, path


def test_each_change_is_logged_with_its_key_s_label_and_reads_are_not(
    secured: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Security audit 31: nothing said which key (which team) created, cancelled or deleted
    a job. The label is the start of the key's SHA-256, never the key."""
    labels = [hashlib.sha256(key.encode()).hexdigest()[:8] for key in KEYS]
    with caplog.at_level(logging.INFO, logger="api.auth"):
        job = secured.post("/v1/jobs", json=job_spec(device="cpu-all"), headers=_bearer(0))
        job_id = job.json()["id"]
        secured.get(f"/v1/jobs/{job_id}", headers=_bearer(1))  # a read: not logged
        secured.post(f"/v1/jobs/{job_id}/cancel", headers=_bearer(1))
        secured.delete(f"/v1/jobs/{job_id}", headers=_bearer(1))
        secured.delete("/v1/jobs/none", headers={"Authorization": "Bearer wrong-key-0123456"})
    said = [r.getMessage() for r in caplog.records if r.name == "api.auth"]
    assert said == [
        f"API key {labels[0]}: POST /v1/jobs -> 202 http://testserver/v1/jobs/{job_id}",
        f"API key {labels[1]}: POST /v1/jobs/{job_id}/cancel -> 200",
        f"API key {labels[1]}: DELETE /v1/jobs/{job_id} -> 204",
    ]
    assert not any(key in caplog.text for key in KEYS)


def _bearer(index: int) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[index]}"}


def test_openapi_says_which_operations_need_a_key(secured: TestClient) -> None:
    spec = secured.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert spec["paths"]["/v1/jobs"]["post"]["security"] == [{"apiKey": []}]
    refused = spec["paths"]["/v1/jobs"]["post"]["responses"]["401"]
    assert "WWW-Authenticate" in refused["headers"]  # and the body every error has
    assert refused["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorAnswer")
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_the_client_sends_its_key(secured: TestClient) -> None:
    """HwnasClient (and so the CLI, which passes --api-key / $HWNAS_API_KEY) authenticates."""
    client = HwnasClient("http://testserver", api_key=KEYS[1])
    secured.headers = client.http.headers  # the client's own headers, served in-process
    client.http = secured
    assert client.submit(job_spec(device="cpu-all"))["status"] == "queued"
    del secured.headers["authorization"]
    with pytest.raises(ClientError, match="401"):
        client.submit(job_spec(device="cpu-all"))


def test_no_keys_means_no_authentication(client: TestClient) -> None:
    assert client.get("/v1/jobs").status_code == 200
    spec = client.get("/openapi.json").json()
    # declared optional: a client generated here can send a key to a server that has them
    assert spec["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert spec["paths"]["/v1/jobs"]["post"]["security"] == [{}, {"apiKey": []}]
    assert "401" not in spec["paths"]["/v1/jobs"]["post"]["responses"]


@pytest.mark.parametrize("keys", ["short", "ok-length-but-has space-in-it", "k" * 15 + ",x"])
def test_weak_or_malformed_keys_are_refused_at_start_up(tmp_path: Path, keys: str) -> None:
    with pytest.raises(InvalidInput, match="at least 16 printable ASCII characters, no spaces"):
        create_app(embedded_settings(tmp_path, api_keys=keys))


@pytest.mark.parametrize(
    "keys", [",", " , ", f"{KEYS[0]},", f",{KEYS[0]}", f"{KEYS[0]},,{KEYS[1]}"]
)
def test_an_empty_entry_is_refused_not_taken_for_no_keys(tmp_path: Path, keys: str) -> None:
    """Tenancy audit 33: "$TEAM_A_KEY,$TEAM_B_KEY" with secrets that never reached the
    environment is ",", which served with no key at all."""
    with pytest.raises(InvalidInput, match=r"HWNAS_API_KEYS: entry \d of \d is empty"):
        create_app(embedded_settings(tmp_path, api_keys=keys))


def test_a_key_listed_twice_is_one_key() -> None:
    assert parse_api_keys(f"{KEYS[0]}, {KEYS[0]},{KEYS[1]}") == [k.encode() for k in KEYS]
    assert parse_api_keys("  ") == []


def test_a_websocket_without_a_key_is_closed_as_a_policy_violation(secured: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect) as closed, secured.websocket_connect("/v1/anything"):
        pass
    assert closed.value.code == 1008 and "API key" in closed.value.reason


def test_a_key_the_server_could_never_accept_is_refused_by_the_client() -> None:
    with pytest.raises(ClientError, match="printable ASCII"):
        HwnasClient("http://127.0.0.1:1", api_key="clé-0123456789abcdef")


def test_a_health_check_without_a_key_gets_the_status_alone(secured: TestClient) -> None:
    """Open to load balancers, but its details (the broker's or database's host, port and
    user in ``problems`` or a 503's reason, the devices served) only with a key (security
    review, session 20)."""
    keyed = {"Authorization": f"Bearer {KEYS[0]}"}
    assert secured.get("/healthz").json() == {"status": "ok"}
    assert secured.get("/healthz", headers={"Authorization": "Bearer wrong"}).json() == {
        "status": "ok"
    }
    full = secured.get("/healthz", headers=keyed).json()
    assert full["status"] == "ok" and "devices_served" in full and "problems" in full
    app = secured.app
    head = app.state.schema_head
    app.state.schema_head = "someother"  # as if the database were replaced under it
    try:
        anonymous = secured.get("/healthz")
        assert anonymous.status_code == 503
        assert anonymous.json()["message"] == "not ready (send an API key for the reason)"
        assert "revision" in secured.get("/healthz", headers=keyed).json()["message"]
    finally:
        app.state.schema_head = head


def test_a_change_that_ends_in_a_server_error_is_logged_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Review 31: it was logged "-> none"."""
    import store.jobs

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(store.jobs, "request_cancel", broken)
    settings = embedded_settings(tmp_path, api_keys=",".join(KEYS))
    with (
        TestClient(create_app(settings), raise_server_exceptions=False) as client,
        caplog.at_level(logging.INFO, logger="api.auth"),
    ):
        assert client.post("/v1/jobs/j1/cancel", headers=_bearer(0)).status_code == 500
    label = hashlib.sha256(KEYS[0].encode()).hexdigest()[:8]
    assert f"API key {label}: POST /v1/jobs/j1/cancel -> 500 (an unhandled error)" in caplog.text
