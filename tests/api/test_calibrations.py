"""Device calibrations through the service: a job on the device's queue that measures a
uniform sample, fits, stores a version naming the job; listed, filtered, reused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import get_settings
from models.registry import get_supernet
from workers.calibration import latency_predictor_for

from ..conftest import embedded_settings
from .helpers import job_spec, wait_for

DEVICE = "nb201-1080ti-1"
RECORDED = f"/v1/devices/{DEVICE}/calibrations"
METRICS = {"n", "within_10pct", "spearman", "mape", "method"}


@pytest.fixture
def recorded_client(tmp_path: Path) -> Iterator[TestClient]:
    """An embedded server whose in-process worker serves the recorded device."""
    with TestClient(create_app(embedded_settings(tmp_path, embedded_devices=DEVICE))) as client:
        yield client


def _calibrate(client: TestClient, url: str, body: dict[str, object]) -> dict[str, object]:
    """POST a calibration, wait for its job to succeed, return the version it stored."""
    response = client.post(url, json=body)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "calibration" and job["strategy"] == "uniform"
    assert job["progress"]["budget"] == body["n_samples"] and job["objectives"] == {}
    kind = body.get("kind", "scaled-lut")
    assert job["calibration"] == {
        "predictor_kind": kind,
        "n_samples": body["n_samples"],
        "predictors_url": f"http://testserver{url}?job_id={job['id']}",
    }
    job = wait_for(client, job["id"], until={"succeeded"}, timeout_s=120)
    listed = client.get(job["calibration"]["predictors_url"]).json()["data"]
    assert len(listed) == 1 and listed[0]["job_id"] == job["id"]
    assert f"latency predictor v{listed[0]['version']} " in job["message"]
    return listed[0]


def test_a_recorded_device_is_calibrated_by_a_job_versioned_and_reused(
    recorded_client: TestClient,
) -> None:
    client = recorded_client
    body = {"supernet": "nb201-cifar10", "n_samples": 30, "seed": 1}
    created = _calibrate(client, RECORDED, body)
    assert created["version"] == 1 and created["n_measurements"] == 30
    assert created["latency_source"] == "recorded" and created["kind"] == "scaled-lut"
    assert set(created["metrics"]) == METRICS and created["metrics"]["n"] == 30
    second = _calibrate(client, RECORDED, {**body, "n_samples": 40, "kind": "ridge"})
    assert second["version"] == 2 and second["kind"] == "ridge"

    # The job's evaluations are the sample's latencies, each sub-network once.
    evaluations = client.get(f"/v1/jobs/{created['job_id']}/evaluations").json()["data"]
    assert len({e["subnet_id"] for e in evaluations}) == 30
    assert all(set(e["metrics"]) == {"latency_ms"} for e in evaluations)
    assert {e["details"]["latency"]["provenance"] for e in evaluations} == {"recorded"}
    pareto = client.get(f"/v1/jobs/{created['job_id']}/pareto")
    assert pareto.status_code == 409 and "calibration" in pareto.json()["detail"]
    kinds = {j["id"]: j["kind"] for j in client.get("/v1/jobs").json()["data"]}
    assert set(kinds.values()) == {"calibration"} and len(kinds) == 2
    assert client.get("/v1/jobs", params={"kind": "search"}).json()["count"] == 0

    listed = client.get(RECORDED, params={"supernet": "nb201-cifar10"}).json()
    assert listed["count"] == 2 and [c["version"] for c in listed["data"]] == [2, 1]
    assert client.get(RECORDED, params={"supernet": "fmnist-ofa-cnn"}).json()["count"] == 0
    # a page at a time (scale audit 33: 450 versions, every one's JSON, in one answer)
    second_page = client.get(RECORDED, params={"offset": 1, "limit": 1}).json()
    assert second_page["count"] == 2 and [c["version"] for c in second_page["data"]] == [1]
    assert (second_page["offset"], second_page["limit"]) == (1, 1)
    assert client.get(RECORDED, params={"limit": 501}).status_code == 422

    factory = client.app.state.session_factory  # type: ignore[attr-defined]
    predicted = latency_predictor_for(factory, "nb201-cifar10", DEVICE)
    assert predicted is not None and predicted.version == 2
    assert predicted.provenance["provenance"] == "predicted"
    supernet = get_supernet("nb201-cifar10")
    archs = [supernet.decode(key) for key in sorted(supernet.rows)[:5]]
    latency = predicted(archs)
    assert isinstance(latency, np.ndarray) and latency.shape == (5,) and np.all(latency > 0)
    assert latency_predictor_for(factory, "nb201-cifar10", "nb201-pixel3") is None

    # A search on the same pair is not warm-started from the calibrations' measurements
    # (latency only: a search that needs accuracy cannot use them).
    search = job_spec(supernet="nb201-cifar10", device=DEVICE, constraints={}, strategy="random")
    job = wait_for(client, client.post("/v1/jobs", json=search).json()["id"], until={"succeeded"})
    assert job["progress"]["evaluations_reused"] == 0 and job["kind"] == "search"
    assert job["calibration"] is None


def test_bad_calibration_requests_say_what_is_wrong(client: TestClient) -> None:
    body = {"supernet": "nb201-cifar10", "n_samples": 10}
    unknown = client.post("/v1/devices/no-such-device/calibrations", json=body)
    assert unknown.status_code == 404 and "no-such-device" in unknown.json()["detail"]
    too_many = client.post(RECORDED, json={**body, "n_samples": 500})
    assert too_many.status_code == 422 and "n_samples" in too_many.json()["message"]
    no_supernet = client.post(RECORDED, json={**body, "supernet": "nope"})
    assert no_supernet.status_code == 422 and "supernet" in no_supernet.json()["message"]
    mixed = client.post(RECORDED, json={**body, "supernet": "fmnist-ofa-cnn"})
    assert mixed.status_code == 422 and mixed.json()["field"] == "supernet"
    assert "cannot evaluate the trained supernet" in mixed.json()["detail"]
    kind = client.post(RECORDED, json={**body, "kind": "oracle"})
    assert kind.status_code == 422 and "predictor kind" in kind.json()["message"]
    seed = client.post(RECORDED, json={**body, "seed": 2**31})  # a jobs.seed is 32 bits
    assert seed.status_code == 422 and "seed" in seed.json()["message"]
    label = client.post(RECORDED, json={**body, "labels": {"-x": "1"}})
    assert label.status_code == 422 and "label name '-x'" in label.json()["message"]
    listed = client.get(RECORDED, params={"supernet": "nope"})
    assert listed.status_code == 422 and "nb201-cifar10" in listed.json()["message"]
    not_json = client.post(RECORDED, content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 422 and "Invalid JSON" in not_json.json()["message"]
    assert client.get("/v1/jobs").json()["count"] == 0  # nothing was queued


def test_the_operators_budget_cap_bounds_a_calibrations_samples(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HWNAS_MAX_BUDGET", "20")
    get_settings.cache_clear()
    try:
        body = {"supernet": "nb201-cifar10", "n_samples": 21}
        over = client.post(RECORDED, json=body)
        assert over.status_code == 422, over.text
        assert "at most 20 (HWNAS_MAX_BUDGET)" in over.json()["message"]
        search = client.post("/v1/jobs", json=job_spec(budget={"evaluations": 21}))
        assert "between 1 and 20 (HWNAS_MAX_BUDGET)" in search.json()["message"]
        assert client.get("/v1/jobs").json()["count"] == 0
    finally:
        get_settings.cache_clear()


def test_defaults_over_the_operators_cap_are_lowered_to_it(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body without a budget (or with ``"budget": {}``), or a calibration without
    ``n_samples``, once ran its default (60, 50) whatever the cap; a cap below 60 also made
    every search body without a budget one error about a 60 it never sent, hiding the
    others. The defaults are now the cap where it is lower, and checked like given values."""
    monkeypatch.setenv("HWNAS_MAX_BUDGET", "7")
    get_settings.cache_clear()
    try:
        spec = {"supernet": "nb201-cifar10", "device": "nb201-pixel3"}
        for body in (spec, {**spec, "budget": {}}):
            queued = client.post("/v1/jobs", json=body)
            assert queued.status_code == 202, queued.text
            assert queued.json()["progress"]["budget"] == 7
        calibration = client.post(RECORDED, json={"supernet": "nb201-cifar10"})
        assert calibration.status_code == 202, calibration.text
        assert calibration.json()["progress"]["budget"] == 7
        wrong = client.post("/v1/jobs", json={**spec, "device": "cpu-1t", "colour": "red"})
        assert wrong.status_code == 422
        fields = {tuple(error["loc"]) for error in wrong.json()["detail"]}
        assert fields == {("body", "device"), ("body", "colour")}  # the real errors, both
    finally:
        get_settings.cache_clear()
    monkeypatch.setenv("HWNAS_MAX_BUDGET", "3")  # below a calibration's least sample
    get_settings.cache_clear()
    try:
        refused = client.post(RECORDED, json={"supernet": "nb201-cifar10"})
        assert refused.status_code == 422
        message = refused.json()["message"]
        assert "n_samples" in message and "at least 5 sub-networks, more than this service " in (
            message
        )
    finally:
        get_settings.cache_clear()


def test_a_calibration_for_a_device_nobody_serves_waits_and_says_why(client: TestClient) -> None:
    # This server serves cpu-1t only (conftest): a cpu-ort calibration waits for a worker.
    body = {"supernet": "fmnist-ofa-cnn", "labels": {"fleet": "edge"}}
    key = {"Idempotency-Key": "calibrate-edge"}
    response = client.post("/v1/devices/cpu-ort/calibrations", json=body, headers=key)
    again = client.post("/v1/devices/cpu-ort/calibrations", json=body, headers=key)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == response.json()["id"]
    elsewhere = client.post("/v1/devices/cpu-all/calibrations", json=body, headers=key)
    assert elsewhere.status_code == 409  # the key's request named another device
    search = client.post("/v1/jobs", json=job_spec(), headers=key)
    assert search.status_code == 409  # nor is a search the same request
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and "no live worker serves device 'cpu-ort'" in job["message"]
    assert job["labels"] == {"fleet": "edge"}  # and the listing finds it by them
    listed = client.get("/v1/jobs", params={"kind": "calibration", "label": "fleet=edge"})
    assert [j["id"] for j in listed.json()["data"]] == [job["id"]]
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"


def test_a_live_device_is_calibrated_with_real_measurements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A one-thread CPU profile with a short protocol: this test checks the path, not timings.
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "cpu-quick.yaml").write_text(
        "id: cpu-quick\nname: quick CPU\nkind: cpu\nruntime: torch_eager\nthreads: 1\n"
        "protocol: {warmup: 1, min_repeats: 3, max_repeats: 10, target_rel_ci: 0.5, "
        "time_cap_s: 0.05, min_sample_ms: 0.05}\n"
    )
    monkeypatch.setenv("HWNAS_PROFILE_DIRS", str(profiles))
    get_settings.cache_clear()
    try:
        settings = embedded_settings(tmp_path, embedded_devices="cpu-quick")
        with TestClient(create_app(settings)) as client:
            url = "/v1/devices/cpu-quick/calibrations"
            body = {"supernet": "fmnist-ofa-cnn", "n_samples": 5, "seed": 3}
            created = _calibrate(client, url, body)
            assert created["latency_source"] == "measured" and created["n_measurements"] == 5
            assert created["metrics"]["method"] == "leave-one-out"
            assert [c["id"] for c in client.get(url).json()["data"]] == [created["id"]]
            evaluations = client.get(f"/v1/jobs/{created['job_id']}/evaluations").json()["data"]
            assert {"latency_ms", "macs", "params"} <= set(evaluations[0]["metrics"])
            assert "accuracy" not in evaluations[0]["metrics"]  # latency only: not evaluated
            assert all(e["details"]["latency"]["repeats"] >= 3 for e in evaluations)
    finally:
        get_settings.cache_clear()
