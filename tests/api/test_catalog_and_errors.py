"""Catalog endpoints, and bad input answered with messages that name the field."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import text

import hardware_profiles.registry
from alembic import command
from api.app import create_app
from api.errors import ErrorAnswer
from api.presenters import job_message, stall_note
from api.schemas import JobCreate
from core.settings import Settings, get_settings
from models import registry
from models.text_transformer import TextTransformerSupernet
from search import list_strategies
from store import jobs as q
from store.db import alembic_config, make_engine, make_session_factory, transaction
from workers.dispatch import shown_devices

from ..conftest import embedded_settings
from ..store.backends import database_url
from .helpers import job_spec


def test_health_supernets_devices_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    supernets = client.get("/v1/supernets").json()
    assert {"fmnist-ofa-cnn"} <= {s["id"] for s in supernets}
    by_id = {s["id"]: s for s in supernets}
    ofa = by_id["ofa_mbv3_d234_e346_k357_w1.0"]  # no checkpoint configured in tests
    assert ofa["has_validation_data"] is False and "random weights" in ofa["note"]
    assert 0 < ofa["space_size"] < ofa["raw_space_size"]
    assert by_id["fmnist-ofa-cnn"]["has_validation_data"] is True
    devices = {d["id"]: d for d in client.get("/v1/devices").json()}
    assert devices["cpu-1t"]["served"] is True
    assert devices["cpu-all"]["served"] is False  # this test server serves cpu-1t only
    nb201 = ["nb201-cifar10", "nb201-cifar100", "nb201-imagenet16-120"]
    assert devices["nb201-pixel3"]["supernets"] == nb201  # its table's, and only those
    trained = devices["cpu-1t"]["supernets"]
    assert "fmnist-ofa-cnn" in trained and not set(nb201) & set(trained)
    assert set(trained) | set(nb201) == set(by_id)  # every supernet runs somewhere
    assert client.get("/docs").status_code == 200


def test_a_job_for_an_unserved_device_waits_and_says_so(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why: not chosen for this server, or one this machine cannot measure on."""
    job = client.post("/v1/jobs", json=job_spec(device="cpu-all")).json()
    assert job["status"] == "queued"
    devices = {d["id"]: d for d in client.get("/v1/devices").json()}
    assert (devices["cpu-all"]["queued"], devices["cpu-all"]["running"]) == (1, 0)
    assert (devices["cpu-ort"]["queued"], devices["cpu-ort"]["running"]) == (0, 0)
    assert job["message"] == (
        "waiting: no live worker serves device 'cpu-all' (this server serves: cpu-1t; "
        "HWNAS_EMBEDDED_DEVICES chooses them)"
    )
    monkeypatch.setattr(hardware_profiles.registry, "_cuda_device_present", lambda p: False)
    on_gpu = client.post("/v1/jobs", json=job_spec(device="cuda-0")).json()
    assert on_gpu["message"] == (
        "waiting: no live worker serves device 'cuda-0': this server cannot measure on it "
        "(it needs CUDA device cuda:0, which this machine lacks); a worker on a machine that "
        "can (hwnas worker --devices cuda-0, the distributed mode: HWNAS_BROKER_URL) would "
        "take it"
    )


def test_a_queued_job_says_why_it_waits_now_not_also_why_it_waited_before(
    tmp_path: Path,
) -> None:
    """Upgrade audit 31: after a restart with other devices the stored reason ("this server
    serves: cpu-ts") followed today's, which contradicted it; where the job waits for
    nothing now, the stored reason is dropped."""
    stored = (
        "waiting: no live worker serves device 'cpu-all' (this server serves: cpu-1t; "
        "HWNAS_EMBEDDED_DEVICES chooses them)"
    )
    now = stored.replace("serves: cpu-1t;", "serves: cpu-1t, cpu-ts;")
    with TestClient(create_app(embedded_settings(tmp_path, embedded_devices="cpu-1t"))) as client:
        job_id = client.post("/v1/jobs", json=job_spec(device="cpu-all")).json()["id"]
        assert client.get(f"/v1/jobs/{job_id}").json()["message"] == stored  # as stored
    restarted = embedded_settings(tmp_path, embedded_devices="cpu-1t,cpu-ts")
    with TestClient(create_app(restarted)) as client:
        assert client.get(f"/v1/jobs/{job_id}").json()["message"] == now
        assert client.get("/v1/jobs").json()["data"][0]["message"] == now
        assert client.get(f"/v1/jobs/{job_id}/pareto").json()["message"] == now

    class ServedNow:  # the dispatcher of a server that serves its device, idle
        def waiting_reason(self, device: str) -> None:
            return None

        def queue_reason(self, job_id: str) -> None:
            return None

    factory = make_session_factory(make_engine(restarted.database_url))
    with transaction(factory) as session:
        job = q.get_job(session, job_id)
        note = stall_note(job, 60.0, ServedNow())  # type: ignore[arg-type]
        assert note == "" and job_message(job, note) is None
        assert job_message(job, None) == stored  # no note given: the stored message


def test_many_devices_of_a_family_are_named_by_their_pattern() -> None:
    nb201 = [f"nb201-d{k}" for k in range(27)]
    assert shown_devices([*nb201, "cpu-1t", "cpu-all"]) == "cpu-1t, cpu-all, nb201-* (27)"
    assert shown_devices(nb201[:5]) == ", ".join(sorted(nb201[:5])) and shown_devices([]) == "none"


@pytest.mark.parametrize(
    ("change", "field", "hint"),
    [
        ({"supernet": "nope"}, "supernet", "fmnist-ofa-cnn"),
        ({"device": "tpu-9"}, "device", "cpu-1t"),
        ({"strategy": "magic"}, "strategy", "nsga2"),
        ({"objectives": {"flops": "min"}}, "objectives", "latency_ms"),
        ({"objectives": {"accuracy": "up"}}, "objectives.accuracy", "'min' or 'max'"),
        ({"objectives": {}}, "objectives", "at least one"),
        (
            {"constraints": {"latency_ms": {"maximum": 2}}},
            "constraints.latency_ms.maximum",
            "Extra inputs",
        ),
        ({"constraints": {"latency_ms": {}}}, "constraints.latency_ms", "'min', 'max'"),
        (
            {"constraints": {"latency_ms": {"min": 3, "max": 2}}},
            "constraints.latency_ms",
            "greater than max",
        ),
        ({"constraints": {"watts": {"max": 2}}}, "constraints", "unknown metric 'watts'"),
        # bounds no sub-network can meet spent a whole budget to say nothing was feasible
        (
            {"constraints": {"accuracy": {"min": 1.5}}},
            "constraints",
            "accuracy >= 1.5 can be met by no sub-network: accuracy is 0..1",
        ),
        (
            {"constraints": {"latency_ms": {"max": -1}}},
            "constraints",
            "latency_ms <= -1 can be met by no sub-network: latency_ms is 0 or more",
        ),
        ({"budget": {"evaluations": 0}}, "budget.evaluations", "between 1 and"),
        ({"budget": {"evaluations": 10**9}}, "budget.evaluations", "between 1 and"),
        ({"budget": {"failures": -1}}, "budget.failures", "greater than or equal to 0"),
        ({"budget": {"failures": 10**9}}, "budget.failures", "at most"),
        ({"budget": {"failures": 2.5}}, "budget.failures", "valid integer"),
        ({"seed": "abc"}, "seed", "integer"),
        ({"budget": "lots"}, "budget", ""),
        # JSON types as declared: nothing a user got wrong is coerced into something else
        ({"seed": "42"}, "seed", "valid integer"),
        ({"budget": {"evaluations": True}}, "budget.evaluations", "valid integer"),
        ({"warm_start": "off"}, "warm_start", "valid boolean"),
        ({"constraints": {"latency_ms": {"max": "5"}}}, "constraints.latency_ms.max", "number"),
    ],
)
def test_bad_job_specs_get_422_naming_the_field(
    client: TestClient, change: dict, field: str, hint: str
) -> None:
    response = client.post("/v1/jobs", json=job_spec(**change))
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    assert message.startswith(field) or f"; {field}" in message, message
    assert hint in message


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_bounds_are_422_not_a_failed_job(client: TestClient, literal: str) -> None:
    """pydantic's JSON reader takes NaN and Infinity, which JSON does not have; neither is a
    bound (a job stored with one failed when it ran, and its spec was not JSON)."""
    body = json.dumps(job_spec()).replace('{"max": 50.0}', '{"max": ' + literal + "}")
    assert literal in body
    response = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert "finite number" in response.json()["message"]
    finite = client.post("/v1/jobs", json=job_spec(constraints={"latency_ms": {"max": 1e308}}))
    assert finite.status_code == 202, finite.text
    assert client.get("/v1/jobs").json()["count"] == 1


def test_missing_fields_and_unknown_fields_are_422(client: TestClient) -> None:
    assert client.post("/v1/jobs", json={"device": "cpu-1t"}).status_code == 422
    response = client.post("/v1/jobs", json=job_spec(colour="red"))
    assert response.status_code == 422 and "colour" in response.json()["message"]


def test_unknown_ids_are_404_and_unknown_format_is_422(client: TestClient) -> None:
    assert client.get("/v1/jobs/doesnotexist").status_code == 404
    assert client.get("/v1/jobs/doesnotexist/pareto").status_code == 404
    assert client.post("/v1/jobs/doesnotexist/cancel").status_code == 404
    job = client.post("/v1/jobs", json=job_spec(device="cpu-all")).json()
    missing = client.get(f"/v1/jobs/{job['id']}/subnets/r20-k3e2-k3e2-k3e2/export")
    assert missing.status_code == 404 and "not measured" in missing.json()["detail"]
    bad = client.get(f"/v1/jobs/{job['id']}/subnets/x/export", params={"format": "tflite"})
    assert bad.status_code == 422 and "onnx" in bad.json()["detail"]
    # errors raised by handlers carry a message too, as request-validation 422s do
    assert bad.json()["message"].startswith("format") and "onnx" in bad.json()["message"]
    assert "not found" in client.get("/v1/jobs/doesnotexist").json()["message"]
    # and so do the framework's own: no such path, no such method
    assert client.get("/v1/nothing-here").json() == {"detail": "Not Found", "message": "Not Found"}
    wrong = client.delete("/v1/jobs")
    assert wrong.status_code == 405 and wrong.json()["message"] == "Method Not Allowed"


@pytest.mark.parametrize(
    ("content", "content_type", "hint"),
    [
        (b'{"supernet": ', "application/json", "body: Invalid JSON: EOF while parsing"),
        (b"[1, 2]", "application/json", "body: Input should be an object"),
        (b"", "application/json", "body: Field required"),
        (None, None, "Content-Type: application/json"),
        (None, "text/plain", "Content-Type: application/json"),
        (None, "application/jsonx", "Content-Type: application/json"),
    ],
)
def test_a_job_body_that_is_not_a_json_object_gets_422_saying_why(
    client: TestClient, content: bytes | None, content_type: str | None, hint: str
) -> None:
    body = json.dumps(job_spec(device="cpu-all")).encode() if content is None else content
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v1/jobs", content=body, headers=headers)
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    assert message.startswith("body: ") and hint in message, message
    assert response.json()["detail"][0]["loc"][0] == "body"


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/x+json"]
)
def test_json_content_types_with_parameters_or_a_json_suffix_are_accepted(
    client: TestClient, content_type: str
) -> None:
    body = json.dumps(job_spec(device="cpu-all")).encode()
    response = client.post("/v1/jobs", content=body, headers={"content-type": content_type})
    assert response.status_code == 202, response.text


def test_openapi_documents_the_job_body_read_from_raw_bytes(client: TestClient) -> None:
    """POST /v1/jobs reads its body itself (api.bodies): the schema must still say what it is."""
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/v1/jobs"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert post["requestBody"]["required"] is True
    assert schema == {"$ref": "#/components/schemas/JobCreate"}
    invalid = post["responses"]["422"]["content"]["application/json"]["schema"]["anyOf"]
    assert [ref["$ref"].rsplit("/", 1)[1] for ref in invalid] == ["ValidationAnswer", "ErrorAnswer"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's, replaced
    components = spec["components"]["schemas"]
    job_create = components["JobCreate"]
    assert set(job_create["properties"]) == set(JobCreate.model_fields)
    assert job_create["required"] == ["supernet", "device"]
    for ref in _refs(job_create):  # every nested model is there too (BoundIn, BudgetIn)
        assert ref.removeprefix("#/components/schemas/") in components, ref
    # what a submission answers and takes besides its body (docs audit 32)
    calibrate = spec["paths"]["/v1/devices/{device_id}/calibrations"]["post"]
    for route in (post, calibrate):
        accepted = route["responses"]["202"]
        assert set(accepted["headers"]) == {"Location", "Idempotent-Replayed"}
        assert "application/json" in accepted["content"]  # the job, as before
        [key] = [p for p in route["parameters"] if p["in"] == "header"]
        assert key["name"] == "Idempotency-Key" and key["schema"]["pattern"] == "^[!-~]{1,255}$"
    patch = spec["paths"]["/v1/jobs/{job_id}"]["patch"]["requestBody"]["content"]
    assert set(patch) == {"application/json", "application/merge-patch+json"}


def _refs(schema: object) -> list[str]:
    if isinstance(schema, dict):
        own = [schema["$ref"]] if "$ref" in schema else []
        return own + [r for value in schema.values() for r in _refs(value)]
    if isinstance(schema, list):
        return [r for value in schema for r in _refs(value)]
    return []


@pytest.mark.parametrize(
    ("prefix", "encoding"), [(b"\xef\xbb\xbf", "utf-8"), (b"", "utf-16"), (b"", "utf-32")]
)
def test_a_job_body_with_a_byte_order_mark_or_in_utf16_is_read(
    client: TestClient, prefix: bytes, encoding: str
) -> None:
    """As FastAPI's body path (the standard library's json) read them; pydantic alone does not."""
    body = prefix + json.dumps(job_spec(device="cpu-all")).encode(encoding)
    response = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 202, response.text
    bad = prefix + json.dumps(job_spec(device="cpu-all", seed=-1)).encode(encoding)
    response = client.post("/v1/jobs", content=bad, headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["message"].startswith("seed:")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_a_key_given_twice_is_422_not_the_last_one_silently(
    client: TestClient, encoding: str
) -> None:
    """Multi-objective audit 33: {"accuracy": "max", "accuracy": "min"} ran a job that
    minimised accuracy (a JSON parser keeps the last)."""
    twice = (
        '{"supernet": "fmnist-ofa-cnn", "device": "cpu-all", '
        '"objectives": {"accuracy": "max", "accuracy": "min", "macs": "min"}, '
        '"constraints": {"params": {"max": 600}, "params": {"min": 5000}}}'
    )
    response = client.post(
        "/v1/jobs", content=twice.encode(encoding), headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["message"] == (
        "body: 'accuracy', 'params' given twice in one object (the last would win): give "
        "each key once"
    )
    assert client.get("/v1/jobs").json()["count"] == 0


def test_a_body_that_is_not_utf8_json_is_422_not_a_server_error(client: TestClient) -> None:
    response = client.post(
        "/v1/jobs",
        content=b'{"supernet": "\xff\xfe"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422 and "Invalid JSON" in response.json()["message"]


def test_an_unhandled_error_is_a_json_500_with_a_reference_in_the_log(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings)

    def broken() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    app.add_api_route("/v1/broken", broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/v1/broken")
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "InternalServerError" and "hunter2" not in response.text
    reference = body["message"].split("reference ")[1].split(" ")[0]
    logged = [r for r in caplog.records if reference in r.getMessage()]
    assert logged and "RuntimeError: secret internals" in logged[0].getMessage()


def test_a_supernet_whose_weights_do_not_load_is_listed_with_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One bad entry of HWNAS_SUPERNET_CHECKPOINTS once failed the whole catalog (422)."""
    name = "text-transformer-synth"
    wrong = tmp_path / "wrong.pt"
    torch.save({"embedding.weight": torch.zeros(3, 3)}, wrong)
    monkeypatch.setenv("HWNAS_SUPERNET_CHECKPOINTS", f"{name}={wrong}")
    get_settings.cache_clear()
    monkeypatch.delitem(registry._INSTANCES, name, raising=False)
    try:
        with TestClient(create_app(embedded_settings(tmp_path))) as client:
            listed = client.get("/v1/supernets")
            assert listed.status_code == 200
            by_id = {s["id"]: s for s in listed.json()}
            assert by_id[name]["note"].startswith("not usable as configured: ")
            assert by_id["fmnist-ofa-cnn"]["note"] is None
            devices = {d["id"]: d for d in client.get("/v1/devices").json()}
            assert "fmnist-ofa-cnn" in devices["cpu-1t"]["supernets"]
            assert name not in devices["cpu-1t"]["supernets"]  # its jobs are refused
            spec = job_spec(supernet=name, objectives={"latency_ms": "min"}, constraints={})
            refused = client.post("/v1/jobs", json=spec)
            assert refused.status_code == 422, refused.text
    finally:
        get_settings.cache_clear()
        registry._INSTANCES.pop(name, None)


def test_an_offset_beyond_what_a_database_can_skip_is_422(client: TestClient) -> None:
    """It reached SQLite as an integer too large for it: a 500."""
    assert client.get(f"/v1/jobs?offset={2**63 - 1}").status_code == 200
    for path in ("/v1/jobs", "/v1/jobs/some-job/evaluations"):
        response = client.get(f"{path}?offset={2**63}")
        assert response.status_code == 422 and "offset" in response.json()["message"]


def test_a_body_over_the_limit_is_413_before_it_is_read_whole(client: TestClient) -> None:
    """A declared length over the limit is refused at once; a chunked body (no length) is
    counted as it arrives. Either way the answer is 413 in the usual error shape."""
    from api.bodies import MAX_BODY_BYTES

    spec = json.dumps(job_spec()).encode()
    padded = spec[:-1] + b',"pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    headers = {"Content-Type": "application/json"}
    declared = client.post("/v1/jobs", content=padded, headers=headers)
    assert declared.status_code == 413
    assert declared.json()["error"] == "PayloadTooLarge" and "KiB" in declared.json()["message"]

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(padded), 65536):
            yield padded[start : start + 65536]

    chunked = client.post("/v1/devices/cpu-1t/calibrations", content=chunks(), headers=headers)
    assert chunked.status_code == 413, chunked.text
    assert client.post("/v1/jobs", content=spec, headers=headers).status_code == 202


def test_health_answers_head_as_load_balancers_ask(client: TestClient) -> None:
    response = client.head("/healthz")
    assert response.status_code == 200 and response.content == b""


class _NotBuilt(TextTransformerSupernet):
    """A plugin whose constructor fails with a plain Python error (its weights file)."""

    name = "test-not-built"

    def __init__(self, **kwargs: object) -> None:
        raise FileNotFoundError(2, "No such file or directory", "/ckpt/mine.pt")


class _NoChoices(TextTransformerSupernet):
    """A plugin whose space has a gene without choices (checked when a job runs, before)."""

    name = "test-no-choices"

    def space(self) -> dict[str, list[object]]:
        return {**super().space(), "extra": []}


def test_a_plugin_that_cannot_be_built_or_searched_is_listed_and_refused_with_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a 500 for the whole catalog and for its jobs; a broken space was a job that
    failed in the worker. Now: listed with a note, and a job naming it is one 422 on
    ``supernet`` (not the same error under every field that looks the supernet up)."""
    for plugin in (_NotBuilt, _NoChoices):
        monkeypatch.setitem(registry._FACTORIES, plugin.name, plugin)
    monkeypatch.setattr(registry, "_FAILED", {})
    try:
        with TestClient(create_app(embedded_settings(tmp_path))) as client:
            listed = client.get("/v1/supernets")
            assert listed.status_code == 200, listed.text
            by_id = {s["id"]: s for s in listed.json()}
            assert by_id[_NotBuilt.name]["note"] == (
                "not usable as configured: supernet 'test-not-built' could not be built: "
                "FileNotFoundError: No such file or directory: mine.pt"  # not the folders
            )
            assert by_id[_NotBuilt.name]["space"] == {}
            assert by_id[_NoChoices.name]["note"] == (
                "not usable as configured: supernet 'test-no-choices' has no valid search "
                "space: gene 'extra': choices must be a non-empty list"
            )
            assert by_id[_NoChoices.name]["genes"] == len(_NoChoices().space())  # as its class is
            assert by_id["fmnist-ofa-cnn"]["note"] is None
            devices = {d["id"]: d for d in client.get("/v1/devices").json()}
            assert "fmnist-ofa-cnn" in devices["cpu-1t"]["supernets"]
            assert not {_NotBuilt.name, _NoChoices.name} & set(devices["cpu-1t"]["supernets"])
            for plugin in (_NotBuilt, _NoChoices):
                spec = job_spec(supernet=plugin.name, objectives={"accuracy": "max"})
                refused = client.post("/v1/jobs", json=spec)
                assert refused.status_code == 422, refused.text
                [error] = refused.json()["detail"]
                assert error["loc"] == ["body", "supernet"]
                assert by_id[plugin.name]["note"].endswith(error["msg"].split(", ", 1)[1])
    finally:
        for plugin in (_NotBuilt, _NoChoices):
            registry._INSTANCES.pop(plugin.name, None)


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/devices/cpu-1t/calibrations"])
def test_a_client_gone_before_its_body_arrived_is_no_server_error(
    client: TestClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """It was logged as an unhandled error with a traceback (a 500 to monitoring)."""
    app = client.app
    received = [
        {"type": "http.request", "body": b'{"supernet": "fmn', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return received.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000"),
                    (b"host", b"127.0.0.1")],
    }  # fmt: skip
    caplog.set_level(logging.INFO)
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("client disconnected during POST" in r.getMessage() for r in caplog.records)


def test_openapi_documents_every_error_answer_the_routes_give(client: TestClient) -> None:
    """Clients generated from the document once broke on the answers it did not list (404,
    409, 413, 503) and on a 422 whose ``detail`` is a string (a route's own InvalidInput)."""
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    ref = {"$ref": "#/components/schemas/ErrorAnswer"}
    for path, item in paths.items():
        for method, operation in item.items():
            answers = operation["responses"]
            assert "500" in answers, (method, path)
            assert path == "/healthz" or "503" in answers, (method, path)
            if "422" in answers:
                assert ref in answers["422"]["content"]["application/json"]["schema"]["anyOf"]
    assert {"404", "409"} <= set(paths["/v1/jobs/{job_id}/cancel"]["post"]["responses"])
    assert "413" in paths["/v1/jobs"]["post"]["responses"]
    export = paths["/v1/jobs/{job_id}/subnets/{subnet_id}/export"]["get"]
    assert list(export["responses"]["200"]["content"]) == ["application/octet-stream"]
    [fmt] = [p for p in export["parameters"] if p["name"] == "format"]
    assert fmt["schema"]["enum"] == ["onnx", "state_dict", "torchscript"]
    # and the answers themselves have that shape
    answers = [
        client.get("/v1/jobs/nope"),  # 404
        client.post(
            "/v1/devices/nb201-titanxp_1/calibrations", json={"supernet": "fmnist-ofa-cnn"}
        ),
        client.get("/v1/jobs/nope/subnets/x/export", params={"format": "tflite"}),  # 422
    ]
    for answer in answers:
        assert answer.status_code in (404, 409, 422), answer.text
        ErrorAnswer.model_validate(answer.json())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_health_is_503_when_the_schema_under_the_server_changed(
    backend: str, tmp_path: Path
) -> None:
    """It ran ``SELECT 1``: ok while every other request failed on a database whose schema
    was gone (a SQLite file replaced) or downgraded. One a newer version migrated is
    degraded, not down: a rolling upgrade would take every old server out at once."""
    with database_url(backend, tmp_path) as url:
        settings = embedded_settings(tmp_path, database_url=url, embedded_devices="none")
        with TestClient(create_app(settings)) as client:
            assert client.get("/healthz").status_code == 200
            command.downgrade(alembic_config(url), "0005")
            answer = client.get("/healthz")
            assert answer.status_code == 503
            assert answer.json()["message"].startswith(
                "the database's schema is at revision 0005, this server runs on "
            )
            command.upgrade(alembic_config(url), "head")
            assert client.get("/healthz").status_code == 200
            engine = make_engine(url)
            with engine.begin() as connection:  # as a newer version's migration leaves it
                head = connection.execute(text("SELECT version_num FROM alembic_version"))
                head = head.scalar()
                connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
            newer = client.get("/healthz")  # a rolling upgrade: served, and said
            assert newer.status_code == 200 and newer.json()["status"] == "degraded"
            assert "revision 9999, newer than this server's" in newer.json()["problems"][0]
            with engine.begin() as connection:
                connection.execute(text("UPDATE alembic_version SET version_num = :h"), {"h": head})
            engine.dispose()


def test_a_503_says_when_to_ask_again() -> None:
    from api.errors import error_response
    from core.errors import InvalidInput, StorageError

    away = error_response(StorageError("database error: OperationalError: connection refused"))
    assert away.status_code == 503 and away.headers["retry-after"] == "5"
    assert "retry-after" not in error_response(InvalidInput("bad", field="x")).headers


def test_a_422_or_404_does_not_echo_a_huge_value_whole(client: TestClient) -> None:
    """A 900 KB supernet name came back twice, a 1.8 MB answer (fuzz probe, session 22)."""
    response = client.post("/v1/jobs", json=job_spec(supernet="a" * 900_000))
    assert response.status_code == 422 and len(response.content) < 5_000, len(response.content)
    assert "(900000 characters)" in response.json()["message"]
    response = client.get("/v1/jobs/" + "j" * 20_000)
    assert response.status_code == 404 and len(response.content) < 1_000


def test_every_operation_tells_its_user_what_it_does_and_nothing_of_its_insides(
    client: TestClient,
) -> None:
    """The /docs pages show each route's description: the user's part of its docstring
    (the part after a form feed, for the code's readers, is left out)."""
    spec = client.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            said = operation.get("description", "")
            assert said, f"{method} {path} has no description"
            for inside in ("``api.", "``store.", "``models.", "``workers.", "event loop"):
                assert inside not in said, (method, path, inside)
    assert "503" in spec["paths"]["/healthz"]["get"]["responses"]


def test_the_reason_of_a_503_is_logged_once_a_minute_with_a_count(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log said nothing of why every write was refused (a read-only database, a full
    disk), only the access log's "503" lines (ops audit 29)."""
    import api.errors
    from api.errors import _Throttled, error_response
    from core.errors import StorageError

    clock = [1000.0]
    monkeypatch.setattr(api.errors.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(api.errors, "_unavailable", _Throttled(interval_s=60.0))
    full = StorageError("database error: OperationalError: database or disk is full")
    with caplog.at_level("WARNING", logger="api.errors"):
        for step in (0.0, 10.0, 20.0, 70.0):
            clock[0] = 1000.0 + step
            assert error_response(full).status_code == 503
        error_response(StorageError("another reason"))
    said = [r.getMessage() for r in caplog.records if r.name == "api.errors"]
    assert said == [
        "answered 503: database error: OperationalError: database or disk is full",
        "answered 503: database error: OperationalError: database or disk is full "
        "(and 2 more such answers in the last 70 s)",
        "answered 503: another reason",
    ]


def test_openapi_types_answers_as_they_come(client: TestClient) -> None:
    """HTTP-only integrator audit 34: a client generated from the document got ~20 fields
    that every answer has as optional, statuses as bare strings, a 422 whose ``message``
    was undeclared, and no Retry-After on a 503; /healthz's 200 was a free-form object."""
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    job = schemas["JobPublic"]
    assert set(job["required"]) == set(job["properties"])  # defaults too: always sent
    assert job["properties"]["status"] == {"$ref": "#/components/schemas/JobStatus"}
    assert schemas["JobCreate"]["properties"]["strategy"]["enum"] == list_strategies()
    validation = schemas["ValidationAnswer"]
    assert set(validation["required"]) == {"detail", "message", "error", "field"}
    refused = client.post("/v1/jobs", json=job_spec(budget={"evaluations": "six"}))
    assert refused.status_code == 422
    assert set(refused.json()) == {"detail", "message", "error", "field"}
    assert refused.json()["field"] == "budget.evaluations"
    assert refused.json()["error"] == "InvalidInput"
    poll = spec["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]
    assert "Retry-After" in poll["503"]["headers"]
    operations = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(set(operations)) == len(operations) and "read_job" in operations  # as named
    health = spec["paths"]["/healthz"]["get"]["responses"]["200"]["content"]
    assert health["application/json"]["schema"] == {"$ref": "#/components/schemas/HealthPublic"}
